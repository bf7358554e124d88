// Package monitor is Phantom's runtime-protection monitor: eBPF programs
// that watch, and in enforce mode stop, access to protected pods from
// outside those pods.
//
// A protected pod is registered with its pod-level cgroup v2 id and level
// (see [PodCgroup]). Its Phantom volumes are registered by the device number
// of their tmpfs. The programs then act on:
//
//   - attach-mode ptrace access to a process of the pod: PTRACE_ATTACH and
//     PTRACE_SEIZE, process_vm_readv and process_vm_writev, and opening
//     /proc/<pid>/mem. Read-mode checks, which runc exec, CNI plugins and
//     readers of /proc/<pid>/ns and /proc/<pid>/status use, are never acted on;
//   - opening /proc/<pid>/environ of a process of the pod;
//   - opening, reading and mapping regular files of the pod's Phantom
//     volumes (listing their directories stays allowed);
//   - core dumps of a process of the pod (recorded only: no hook can stop one),
//     and a core_pattern that sends dumps to a program or a file, reported
//     once at startup.
//
// Processes in the owning pod's cgroup, or in any cgroup below it, and the
// Phantom daemon itself (the process that calls [New]) are always allowed.
// An access by anything else is recorded in [ModeAudit]; in [ModeEnforce] it
// is also stopped.
//
// # Two attach paths
//
// The BPF LSM path ([PathLSM]) attaches to the ptrace_access_check,
// file_open, file_permission and mmap_file LSM hooks and denies with EPERM
// before the kernel grants the access. It needs a kernel with the bpf LSM
// active (booted with lsm=...,bpf) that lets BPF LSM programs load; kernel
// lockdown or a hardened kernel may still refuse them.
//
// Where LSM programs cannot be loaded, the monitor falls back to syscall
// tracepoints ([PathTracepoint]). A tracepoint cannot veto a syscall, so in
// enforce mode the caller is killed with SIGKILL through bpf_send_signal. The
// kill acts after the syscall has started. The killed process never returns
// to user space, but a read has already copied its data. A reader that
// shares that memory with another process (through a MAP_SHARED mapping,
// say) may still leak it. Accesses that bypass syscalls (io_uring
// operations) are not seen on this path. The LSM path is the strong one;
// the tracepoint path detects and limits damage.
// By default the tracepoint path judges Phantom files when they are opened;
// [Config.TraceReads] adds the read-family hooks, which also catch reads
// through a descriptor the reader did not open itself.
//
// [Monitor.Status], the log line written by [New] and the metric
// phantom_monitor_path report the active path. Status().Limits lists what
// the active path cannot see with this kernel and Config, such as ptrace on
// kernels that do not let tracepoint programs resolve a pid to a task.
//
// docs/runtime-protection.md describes the hooks, modes and limits for
// operators.
//
// # Limits
//
// Root on the node can detach the programs, unload them or kill the daemon,
// and so can anything with CAP_BPF or CAP_SYS_ADMIN there: the monitor
// raises the bar for processes outside the pod, not for the node's
// administrator. Only a confidential-computing TEE protects pod memory from
// the hypervisor.
//
// # Events
//
// Each recorded access reaches user space through a ring buffer and becomes
// a JSON audit line, a phantom_monitor_events_total{kind,action} increment and
// a Kubernetes Event on the target pod through [EventRecorder]. Failures of
// the monitor itself are logged and counted in
// phantom_monitor_errors_total{reason}; they never fail a publish.
package monitor
