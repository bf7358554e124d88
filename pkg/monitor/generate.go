package monitor

// The eBPF objects and their Go bindings (*_bpfel.go, *_bpfel.o) are
// generated from bpf/ with bpf2go and committed; rebuilding them needs
// clang, llvm-strip and libbpf-dev. `make -C bpf check` verifies that the
// committed files match the sources.
//go:generate make -C ../../bpf generate
