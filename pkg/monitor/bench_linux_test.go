package monitor

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// workload runs n iterations of a syscall loop.
type workload func(n int) error

// BenchmarkOpenReadClose measures the cost of the loaded programs on the
// hottest hooks: open exit and read entry run for every file on the node.
// See benchmarkUnloadedLoaded for the sub-benchmarks.
func BenchmarkOpenReadClose(b *testing.B) {
	path := filepath.Join(b.TempDir(), "data")
	if err := os.WriteFile(path, make([]byte, 64), 0o600); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 128)
	benchmarkUnloadedLoaded(b, func(n int) error {
		for range n {
			fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			if _, err := unix.Read(fd, buf); err != nil {
				return err
			}
			unix.Close(fd)
		}
		return nil
	})
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
	benchmarkUnloadedLoaded(b, func(n int) error {
		for range n {
			unix.Getpid()
			if err := unix.Stat(path, &st); err != nil {
				return err
			}
		}
		return nil
	})
}

// benchmarkUnloadedLoaded runs work in these sub-benchmarks:
//
//   - unloaded: no programs.
//   - tracing-floor: only the ptrace tracepoint program attached, which the
//     loop never calls. It measures what enabling any syscall tracepoint
//     costs, because every syscall then takes the kernel's syscall tracing
//     path.
//   - loaded: the monitor on its automatic path with a pod and a volume
//     registered, so the hot hooks take their real early exits.
//   - loaded-bpf-stats: as loaded, with the kernel's BPF statistics on. It
//     reports the time spent inside the programs per run (bpf-ns/run),
//     counted over every process on the node.
//   - paired: alternates up to 20 short unloaded and loaded rounds with the programs
//     detached and attached in between, and reports the median of the
//     per-round overhead (overhead-%). Pairing cancels most of the drift
//     that load from other processes adds between separate sub-benchmarks.
//   - paired-trace-reads: paired with Config.TraceReads set, which adds the
//     read-family hooks on the tracepoint path.
//   - paired-tracing-floor: paired with only the ptrace program, the floor
//     of any syscall tracepoint.
func benchmarkUnloadedLoaded(b *testing.B, work workload) {
	requireRoot(b)
	loop := func(b *testing.B) {
		if err := work(b.N); err != nil {
			b.Fatal(err)
		}
	}

	b.Run("unloaded", loop)
	b.Run("tracing-floor", func(b *testing.B) {
		floor := loadPtraceOnly(b)
		defer floor.close()
		if err := floor.attachAll(); err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		loop(b)
		b.StopTimer()
	})
	b.Run("paired-tracing-floor", func(b *testing.B) {
		floor := loadPtraceOnly(b)
		defer floor.close()
		benchmarkPaired(b, floor, work)
	})

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
	b.Logf("monitor path: %s", m.Status().Path)

	b.Run("loaded", loop)
	b.Run("loaded-bpf-stats", func(b *testing.B) {
		stats, err := ebpf.EnableStats(unix.BPF_STATS_RUN_TIME)
		if err != nil {
			b.Skipf("BPF run-time statistics unavailable: %v", err)
		}
		defer stats.Close()

		before := programStats(b, m)
		b.ResetTimer()
		loop(b)
		b.StopTimer()
		b.ReportMetric(programNanosPerRun(before, programStats(b, m)), "bpf-ns/run")
	})
	b.Run("paired", func(b *testing.B) {
		benchmarkPaired(b, m.obj, work)
	})
	m.Close()

	reads, err := New(Config{Logger: discardLogger(), TraceReads: true})
	if err != nil {
		b.Fatalf("New with TraceReads: %v", err)
	}
	defer reads.Close()
	b.Run("paired-trace-reads", func(b *testing.B) {
		benchmarkPaired(b, reads.obj, work)
	})
}

// benchmarkPaired measures b.N iterations of work split into rounds, each
// run once with the programs detached and once attached. Odd rounds run the
// attached half first, so any cost left behind by attaching or detaching
// falls on both halves alike.
func benchmarkPaired(b *testing.B, obj *objects, work workload) {
	// Attaching and detaching take far longer than a round of work, so
	// small b.N (make bench runs 20 iterations) gets few rounds.
	rounds := min(max(b.N/2000, 2), 20)
	perRound := max(b.N/(2*rounds), 1)
	var overheads []float64
	b.ResetTimer()
	for round := range rounds {
		var unloaded, loaded time.Duration
		for _, attached := range []bool{round%2 == 1, round%2 == 0} {
			b.StopTimer()
			if err := setAttached(obj, attached); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			elapsed, err := timeWork(work, perRound)
			if err != nil {
				b.Fatal(err)
			}
			if attached {
				loaded = elapsed
			} else {
				unloaded = elapsed
			}
		}
		overheads = append(overheads, 100*(loaded.Seconds()-unloaded.Seconds())/unloaded.Seconds())
	}
	b.StopTimer()
	slices.Sort(overheads)
	b.ReportMetric(overheads[len(overheads)/2], "overhead-%")
}

func setAttached(obj *objects, attached bool) error {
	if err := obj.detachAll(); err != nil {
		return err
	}
	if attached {
		return obj.attachAll()
	}
	return nil
}

func timeWork(work workload, n int) (time.Duration, error) {
	start := time.Now()
	err := work(n)
	return time.Since(start), err
}

// detachAll closes the object's links, leaving the programs loaded.
func (o *objects) detachAll() error {
	var errs []error
	for _, l := range o.links {
		errs = append(errs, l.Close())
	}
	o.links = nil
	return errors.Join(errs...)
}

// attachAll attaches the object's programs again after detachAll.
func (o *objects) attachAll() error {
	for _, a := range o.attached {
		l, err := attach(a.hook, o.coll.Programs[a.program])
		if err != nil {
			return err
		}
		o.links = append(o.links, l)
	}
	return nil
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

func programNanosPerRun(before, after map[string]ebpf.ProgramStats) float64 {
	var runtime time.Duration
	var runs uint64
	for name, st := range after {
		runtime += st.Runtime - before[name].Runtime
		runs += st.RunCount - before[name].RunCount
	}
	if runs == 0 {
		return 0
	}
	return float64(runtime.Nanoseconds()) / float64(runs)
}

// loadPtraceOnly loads the tracepoint object with only its sys_enter_ptrace
// program set up for attachAll. The benchmark loop makes no ptrace call.
func loadPtraceOnly(b *testing.B) *objects {
	b.Helper()
	if _, err := ensureTracefs(); err != nil {
		b.Fatal(err)
	}
	spec, err := loadTracepoint()
	if err != nil {
		b.Fatal(err)
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		b.Fatalf("load tracepoint programs: %v", err)
	}
	return &objects{
		coll:     coll,
		attached: []attachment{{program: "phantom_tp_ptrace", hook: "tracepoint/syscalls/sys_enter_ptrace"}},
	}
}
