package monitor

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// attackCase is an attach-mode access and the event kind each path records
// for it. On the LSM path process_vm_readv is a ptrace access check.
type attackCase struct {
	attack         string
	tracepointKind string
	lsmKind        string
}

var attachAttacks = []attackCase{
	{attack: attackPtraceAttach, tracepointKind: KindPtrace, lsmKind: KindPtrace},
	{attack: attackPtraceSeize, tracepointKind: KindPtrace, lsmKind: KindPtrace},
	{attack: attackProcessVM, tracepointKind: KindProcessVM, lsmKind: KindPtrace},
	{attack: attackProcMem, tracepointKind: KindProcMem, lsmKind: KindProcMem},
	{attack: attackProcEnviron, tracepointKind: KindProcEnviron, lsmKind: KindProcEnviron},
	{attack: attackFileRead, tracepointKind: KindFileOpen, lsmKind: KindFileOpen},
}

// readModeAttacks must pass untouched: runc exec, CNI plugins and
// monitoring agents read these, and kubelet lists volume directories.
var readModeAttacks = []string{attackProcNS, attackProcStatus, attackVolumeList}

func (c attackCase) kind(path Path) string {
	if path == PathLSM {
		return c.lsmKind
	}
	return c.tracepointKind
}

func (c attackCase) targetsFile() bool {
	return c.attack == attackFileRead
}

func TestTracepointPath(t *testing.T) {
	e := newTestEnv(t, PathTracepoint)
	setSuite("tracepoint", "ran")
	t.Cleanup(func() {
		if t.Failed() {
			setSuite("tracepoint", "failed")
		}
	})

	status := e.mon.Status()
	if status.Path != PathTracepoint {
		t.Fatalf("Status().Path = %q, want %q", status.Path, PathTracepoint)
	}
	if got := testutil.ToFloat64(e.mon.metrics.path.WithLabelValues(string(PathTracepoint))); got != 1 {
		t.Errorf("phantom_monitor_path{path=tracepoint} = %v, want 1", got)
	}
	runProtectionSuite(t, e, PathTracepoint)
}

// TestTracepointPathProbeReads runs the suite with the fd table read
// through probe reads, the code path of kernels that reject
// bpf_rdonly_cast() to void.
func TestTracepointPathProbeReads(t *testing.T) {
	e := newTestEnvConfig(t, Config{ForcePath: PathTracepoint, probeReadsOnly: true})
	runProtectionSuite(t, e, PathTracepoint)
}

// TestTracepointPathWithoutTaskKfuncs loads the variant for kernels that
// refuse task kfuncs in tracepoint programs. Procfs and file accesses are
// still stopped, ptrace and process_vm_readv pass, and Status lists that.
func TestTracepointPathWithoutTaskKfuncs(t *testing.T) {
	e := newTestEnvConfig(t, Config{ForcePath: PathTracepoint, noTaskKfuncs: true})
	limits := e.mon.Status().Limits
	if !slices.ContainsFunc(limits, func(l string) bool { return strings.Contains(l, "ptrace attach") }) {
		t.Errorf("Status().Limits = %q, want the ptrace limitation", limits)
	}
	e.register(ModeEnforce)

	var unseen []int
	for _, c := range attachAttacks {
		r := e.attack(e.outsiderDir, c.attack)
		switch c.attack {
		case attackPtraceAttach, attackPtraceSeize, attackProcessVM:
			if !r.status.Exited() || r.status.ExitStatus() != exitSucceeded {
				t.Errorf("%s: %v, want exit 0 (not covered without task kfuncs)", c.attack, r)
			}
			unseen = append(unseen, r.pid)
		default:
			if !r.status.Signaled() || r.status.Signal() != syscall.SIGKILL {
				t.Errorf("%s: %v, want killed by SIGKILL", c.attack, r)
				continue
			}
			e.checkRecord(t, c, PathTracepoint, r.pid, ActionKill)
		}
	}
	e.expectNoRecords(t, unseen...)
}

// TestTracepointReadsOfInheritedDescriptor opens the secret inside the pod,
// moves the process out of the pod's cgroup and reads through the open
// descriptor. Only the read hooks of Config.TraceReads see that read.
func TestTracepointReadsOfInheritedDescriptor(t *testing.T) {
	t.Run("TraceReads kills the reader", func(t *testing.T) {
		e := newTestEnvConfig(t, Config{ForcePath: PathTracepoint, TraceReads: true})
		e.register(ModeEnforce)
		r := e.attack(e.insiderDir, attackInheritedRead)
		if !r.status.Signaled() || r.status.Signal() != syscall.SIGKILL {
			t.Fatalf("reader: %v, want killed by SIGKILL", r)
		}
		c := attackCase{attack: attackFileRead, tracepointKind: KindFileRead}
		e.checkRecord(t, c, PathTracepoint, r.pid, ActionKill)
	})

	t.Run("default misses the read", func(t *testing.T) {
		e := newTestEnvConfig(t, Config{ForcePath: PathTracepoint})
		limits := e.mon.Status().Limits
		if !slices.ContainsFunc(limits, func(l string) bool { return strings.Contains(l, "TraceReads") }) {
			t.Errorf("Status().Limits = %q, want the TraceReads limitation", limits)
		}
		e.register(ModeEnforce)
		r := e.attack(e.insiderDir, attackInheritedRead)
		if !r.status.Exited() || r.status.ExitStatus() != exitSucceeded {
			t.Fatalf("reader: %v, want exit 0 (reads are not traced by default)", r)
		}
		e.expectNoRecords(t, r.pid)
	})
}

func TestLSMPath(t *testing.T) {
	e := newTestEnv(t, PathLSM)
	if e == nil {
		reason := lsmSkipReason(t)
		setSuite("lsm", "skipped ("+reason+")")
		t.Skipf("BPF LSM programs cannot be loaded here: %s", reason)
	}
	setSuite("lsm", "ran")
	t.Cleanup(func() {
		if t.Failed() {
			setSuite("lsm", "failed")
		}
	})
	if got := e.mon.Status().Path; got != PathLSM {
		t.Fatalf("Status().Path = %q, want %q", got, PathLSM)
	}
	runProtectionSuite(t, e, PathLSM)
}

// lsmSkipReason loads the LSM path once more to report why it failed.
func lsmSkipReason(t *testing.T) string {
	m, err := New(Config{ForcePath: PathLSM, Logger: discardLogger()})
	if m != nil {
		defer m.Close()
	}
	if err == nil {
		t.Fatal("LSM path failed in the test environment but loads on its own")
	}
	reason := m.Status().Reason
	if before, _, ok := strings.Cut(reason, ": the kernel refused"); ok {
		return before
	}
	return reason
}

func runProtectionSuite(t *testing.T, e *testEnv, path Path) {
	t.Run("enforce stops outsider", func(t *testing.T) {
		e.register(ModeEnforce)
		wantAction := ActionKill
		if path == PathLSM {
			wantAction = ActionDeny
		}
		for _, c := range attachAttacks {
			t.Run(c.attack, func(t *testing.T) {
				r := e.attack(e.outsiderDir, c.attack)
				switch path {
				case PathTracepoint:
					if !r.status.Signaled() || r.status.Signal() != syscall.SIGKILL {
						t.Fatalf("attacker: %v, want killed by SIGKILL", r)
					}
				case PathLSM:
					if !r.status.Exited() || r.status.ExitStatus() != exitDenied {
						t.Fatalf("attacker: %v, want exit %d (EPERM)", r, exitDenied)
					}
				}
				e.checkRecord(t, c, path, r.pid, wantAction)
			})
		}
	})

	t.Run("audit records outsider", func(t *testing.T) {
		e.register(ModeAudit)
		for _, c := range attachAttacks {
			t.Run(c.attack, func(t *testing.T) {
				r := e.attack(e.outsiderDir, c.attack)
				if !r.status.Exited() || r.status.ExitStatus() != exitSucceeded {
					t.Fatalf("attacker: %v, want exit 0 with the canary read", r)
				}
				e.checkRecord(t, c, path, r.pid, ActionAudit)
			})
		}
	})

	t.Run("owning pod allowed", func(t *testing.T) {
		e.register(ModeEnforce)
		var pids []int
		for _, c := range attachAttacks {
			r := e.attack(e.insiderDir, c.attack)
			if !r.status.Exited() || r.status.ExitStatus() != exitSucceeded {
				t.Errorf("%s from the owning pod: %v, want exit 0", c.attack, r)
			}
			pids = append(pids, r.pid)
		}
		e.expectNoRecords(t, pids...)
	})

	t.Run("daemon allowed", func(t *testing.T) {
		e.register(ModeEnforce)
		for _, c := range attachAttacks {
			if err := runAttack(c.attack, e.target); err != nil {
				t.Errorf("%s from the daemon: %v", c.attack, err)
			}
			e.resumeVictim()
		}
		e.expectNoRecords(t, os.Getpid())
	})

	t.Run("read mode ignored", func(t *testing.T) {
		e.register(ModeEnforce)
		var pids []int
		for _, attack := range readModeAttacks {
			r := e.attack(e.outsiderDir, attack)
			if !r.status.Exited() || r.status.ExitStatus() != exitSucceeded {
				t.Errorf("%s from outside: %v, want exit 0", attack, r)
			}
			pids = append(pids, r.pid)
		}
		e.expectNoRecords(t, pids...)
	})

	t.Run("unregistered volume ignored", func(t *testing.T) {
		e.register(ModeEnforce)
		if err := e.mon.UnregisterVolume(e.volumeDev); err != nil {
			t.Fatalf("UnregisterVolume: %v", err)
		}
		r := e.attack(e.outsiderDir, attackFileRead)
		if !r.status.Exited() || r.status.ExitStatus() != exitSucceeded {
			t.Errorf("file read after UnregisterVolume: %v, want exit 0", r)
		}
		e.expectNoRecords(t, r.pid)
	})

	t.Run("unregistered pod ignored", func(t *testing.T) {
		e.register(ModeEnforce)
		if err := e.mon.UnregisterPod(e.pod.UID); err != nil {
			t.Fatalf("UnregisterPod: %v", err)
		}
		var pids []int
		for _, c := range attachAttacks {
			r := e.attack(e.outsiderDir, c.attack)
			if !r.status.Exited() || r.status.ExitStatus() != exitSucceeded {
				t.Errorf("%s after UnregisterPod: %v, want exit 0", c.attack, r)
			}
			pids = append(pids, r.pid)
		}
		e.register(ModeAudit)
		e.expectNoRecords(t, pids...)
	})

	t.Run("events metrics and no canary", func(t *testing.T) {
		e.checkOutputs(t, path)
	})
}

// checkRecord waits for the audit record of pid's access and compares it.
func (e *testEnv) checkRecord(t *testing.T, c attackCase, path Path, pid int, action string) {
	t.Helper()
	kind := c.kind(path)
	got, ok := e.waitRecord(func(r auditRecord) bool {
		return int(r.Actor.PID) == pid && r.Kind == kind
	})
	if !ok {
		t.Fatalf("no %s record for attacker %d; audit log:\n%s", kind, pid, e.audit.String())
	}

	want := got
	want.Msg = "runtime protection event"
	want.Level = "WARN"
	want.Node = "test-node"
	want.Path = string(path)
	want.Action = action
	want.Pod.Namespace, want.Pod.Name, want.Pod.UID, want.Pod.CgroupID = e.pod.Namespace, e.pod.Name, e.pod.UID, e.pod.CgroupID
	want.Actor.Cgroup = filepath.Base(e.outsiderDir)
	want.Actor.Container = e.attackerContainerID
	if c.targetsFile() {
		want.Target.File = "password"
		want.Target.Device = e.volumeDev
		want.Container = ""
	} else {
		want.Target.PID = uint32(e.victimPID)
		want.Target.Cgroup = "cri-containerd-" + e.containerID + ".scope"
		want.Container = e.containerID
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("audit record (-want +got):\n%s", diff)
	}
	if got.Actor.CgroupID == 0 || got.Actor.Comm == "" {
		t.Errorf("audit record lacks the actor's cgroup id or comm: %+v", got.Actor)
	}
}

// expectNoRecords checks that none of pids was recorded. It first runs an
// outsider access that is recorded: the ring buffer keeps order, so once
// that record is in the log, any record of the earlier accesses is too.
func (e *testEnv) expectNoRecords(t *testing.T, pids ...int) {
	t.Helper()
	marker := e.attack(e.outsiderDir, attackProcEnviron)
	if _, ok := e.waitRecord(func(r auditRecord) bool { return int(r.Actor.PID) == marker.pid }); !ok {
		t.Fatalf("marker access by %d was not recorded; audit log:\n%s", marker.pid, e.audit.String())
	}
	for _, pid := range pids {
		if records := e.recordsOf(pid); len(records) > 0 {
			t.Errorf("process %d was recorded, want no record: %+v", pid, records)
		}
	}
}

// checkOutputs checks the Kubernetes Events and metrics the suite produced,
// and that the canary reached none of the outputs.
func (e *testEnv) checkOutputs(t *testing.T, path Path) {
	events := e.recorder.all()
	if len(events) == 0 {
		t.Fatal("no Kubernetes Event was recorded")
	}
	reasons := map[string]bool{}
	for _, ev := range events {
		if diff := cmp.Diff(e.pod.ref(), ev.Pod); diff != "" {
			t.Errorf("event for another pod (-want +got):\n%s", diff)
		}
		reasons[ev.Reason] = true
		if strings.Contains(ev.Message, string(e.target.canary)) {
			t.Errorf("event message contains the canary: %q", ev.Message)
		}
	}
	wantReason := ReasonProcessKilled
	if path == PathLSM {
		wantReason = ReasonAccessDenied
	}
	for _, reason := range []string{wantReason, ReasonAccessAudited} {
		if !reasons[reason] {
			t.Errorf("no Kubernetes Event with reason %s; got %v", reason, reasons)
		}
	}

	wantAction := ActionKill
	if path == PathLSM {
		wantAction = ActionDeny
	}
	for _, c := range attachAttacks {
		for _, action := range []string{wantAction, ActionAudit} {
			got := testutil.ToFloat64(e.mon.metrics.events.WithLabelValues(c.kind(path), action))
			if got < 1 {
				t.Errorf("phantom_monitor_events_total{kind=%q,action=%q} = %v, want >= 1", c.kind(path), action, got)
			}
		}
	}
	if n, err := testutil.GatherAndCount(e.registry, "phantom_monitor_events_total"); err != nil || n == 0 {
		t.Errorf("registry has %d phantom_monitor_events_total series (error %v), want some", n, err)
	}

	if strings.Contains(e.audit.String(), string(e.target.canary)) {
		t.Error("audit log contains the canary")
	}
	if lost := e.mon.Status().Lost; lost != 0 {
		t.Errorf("Status().Lost = %d, want 0", lost)
	}
}

// TestRingBufferLoss fills a one-page ring buffer before Run reads it and
// checks that the loss is counted, logged as a metric and reported.
func TestRingBufferLoss(t *testing.T) {
	e := newTestEnvStopped(t, Config{ForcePath: PathTracepoint, ringBufferSize: 4096})
	e.register(ModeAudit)

	// Each event takes 488 bytes of the 4096, so 20 accesses overflow it.
	for range 20 {
		if r := e.attack(e.outsiderDir, attackProcEnviron); !r.status.Exited() || r.status.ExitStatus() != exitSucceeded {
			t.Fatalf("attacker: %v, want exit 0", r)
		}
	}
	lost := e.mon.Status().Lost
	if lost == 0 {
		t.Fatal("Status().Lost = 0 after overflowing the ring buffer")
	}

	e.startRun()
	deadline := time.Now().Add(eventTimeout)
	for testutil.ToFloat64(e.mon.metrics.errors.WithLabelValues(reasonRingbufFull)) < float64(lost) {
		if time.Now().After(deadline) {
			t.Fatalf("phantom_monitor_errors_total{reason=ringbuf_full} = %v, want %d",
				testutil.ToFloat64(e.mon.metrics.errors.WithLabelValues(reasonRingbufFull)), lost)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := len(e.audit.records(t)); n == 0 || n >= 20 {
		t.Errorf("audit log has %d records, want the ring buffer's share of 20", n)
	}
}

func TestCoreDumpRecorded(t *testing.T) {
	e := newTestEnv(t, PathTracepoint)

	cmd, closeCgroup := helperCommand(t, e.victimDir, "crasher", "GOTRACEBACK=crash")
	defer closeCgroup()
	cmd.Dir = t.TempDir()
	_ = cmd.Run()
	ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
	if !ws.CoreDump() {
		reason := fmt.Sprintf("the kernel wrote no core dump for a crash (status %v, core_pattern %q)", ws, e.mon.Status().CorePattern)
		setSuite("coredump", "skipped ("+reason+")")
		t.Skip(reason)
	}

	pid := cmd.Process.Pid
	got, ok := e.waitRecord(func(r auditRecord) bool { return r.Kind == KindCoreDump && int(r.Target.PID) == pid })
	if !ok {
		setSuite("coredump", "failed")
		t.Fatalf("no core dump record for crasher %d; audit log:\n%s", pid, e.audit.String())
	}
	setSuite("coredump", "ran")
	if got.Action != ActionAudit || got.Pod.UID != e.pod.UID || got.Container != e.containerID {
		t.Errorf("core dump record = %+v, want action audit, pod %s, container %s", got, e.pod.UID, e.containerID)
	}
	if got.Target.Detail&0x80 == 0 {
		t.Errorf("core dump record detail %#x lacks the core-dumped bit", got.Target.Detail)
	}
}
