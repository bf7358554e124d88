package monitor

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// BenchmarkOpenReadClose measures the cost of the loaded programs on the
// hottest hooks: open exit and read entry run for every file on the node.
// Compare ns/op of the unloaded and loaded sub-benchmarks of one run.
func BenchmarkOpenReadClose(b *testing.B) {
	path := filepath.Join(b.TempDir(), "data")
	if err := os.WriteFile(path, make([]byte, 64), 0o600); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 128)
	loop := func(b *testing.B) {
		for b.Loop() {
			fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := unix.Read(fd, buf); err != nil {
				b.Fatal(err)
			}
			unix.Close(fd)
		}
	}
	benchmarkUnloadedLoaded(b, loop)
}

// BenchmarkGetpidStat measures a workload that touches no traced syscall:
// enabling any syscall tracepoint still sends every syscall through the
// kernel's tracing slow path.
func BenchmarkGetpidStat(b *testing.B) {
	path := filepath.Join(b.TempDir(), "data")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		b.Fatal(err)
	}
	var st unix.Stat_t
	loop := func(b *testing.B) {
		for b.Loop() {
			unix.Getpid()
			if err := unix.Stat(path, &st); err != nil {
				b.Fatal(err)
			}
		}
	}
	benchmarkUnloadedLoaded(b, loop)
}

// benchmarkUnloadedLoaded runs loop without programs, then with the
// monitor loaded on its automatic path and a pod and volume registered, so
// the hot hooks take their real early exits.
func benchmarkUnloadedLoaded(b *testing.B, loop func(*testing.B)) {
	requireRoot(b)
	b.Run("unloaded", loop)

	m, err := New(Config{Logger: discardLogger()})
	if err != nil {
		b.Fatalf("New: %v", err)
	}
	defer m.Close()
	pod := Pod{Namespace: "bench", Name: "bench", UID: "bench-pod", CgroupID: 1 << 40, CgroupLevel: 3, Mode: ModeEnforce}
	if err := m.RegisterPod(pod); err != nil {
		b.Fatal(err)
	}
	if err := m.RegisterVolume(pod.UID, unix.Mkdev(0, 4095)); err != nil {
		b.Fatal(err)
	}
	b.Run("loaded", func(b *testing.B) {
		b.Logf("monitor path: %s", m.Status().Path)
		stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
		if err != nil {
			b.Logf("BPF run-time statistics unavailable: %v", err)
			loop(b)
			return
		}
		defer stats.Close()

		before := programStats(b, m)
		loop(b)
		after := programStats(b, m)
		var runtime time.Duration
		var runs uint64
		for name, st := range after {
			runtime += st.Runtime - before[name].Runtime
			runs += st.RunCount - before[name].RunCount
		}
		if runs > 0 {
			b.ReportMetric(float64(runtime.Nanoseconds())/float64(runs), "bpf-ns/run")
		}
	})
}

// programStats returns the kernel's run-time statistics of the monitor's
// programs: time spent in them, without the tracing framework's own cost.
// They count runs in every process on the node, not only the benchmark's.
func programStats(b *testing.B, m *Monitor) map[string]ebpf.ProgramStats {
	out := map[string]ebpf.ProgramStats{}
	for name, prog := range m.obj.coll.Programs {
		st, err := prog.Stats()
		if err != nil {
			b.Fatalf("read statistics of %s: %v", name, err)
		}
		out[name] = *st
	}
	return out
}
