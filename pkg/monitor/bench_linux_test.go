package monitor

import (
	"os"
	"path/filepath"
	"testing"

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
		b.ReportMetric(0, string(m.Status().Path)+"_path")
		loop(b)
	})
}
