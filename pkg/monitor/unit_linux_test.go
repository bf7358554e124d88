package monitor

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"golang.org/x/sys/unix"
)

func TestDeviceEncodingRoundTrip(t *testing.T) {
	for _, dev := range []uint64{unix.Mkdev(0, 40), unix.Mkdev(8, 1), unix.Mkdev(259, 3), unix.Mkdev(0, 1<<19)} {
		kdev := kernelDev(dev)
		if want := unix.Major(dev)<<20 | unix.Minor(dev); kdev != want {
			t.Errorf("kernelDev(%d:%d) = %#x, want %#x", unix.Major(dev), unix.Minor(dev), kdev, want)
		}
		if got := userDev(kdev); got != dev {
			t.Errorf("userDev(kernelDev(%#x)) = %#x", dev, got)
		}
	}
}

func TestActiveLockdown(t *testing.T) {
	tests := map[string]string{
		"none [integrity] confidentiality\n": "integrity",
		"[none] integrity confidentiality":   "none",
		"":                                   "",
	}
	for content, want := range tests {
		if got := activeLockdown(content); got != want {
			t.Errorf("activeLockdown(%q) = %q, want %q", content, got, want)
		}
	}
}

func TestPodCgroupLayouts(t *testing.T) {
	const uid = "5d3c1a2b-0000-4a5b-9c8d-112233445566"
	systemdUID := strings.ReplaceAll(uid, "-", "_")
	tests := []struct {
		name      string
		dir       string
		wantLevel int
	}{
		{name: "cgroupfs guaranteed", dir: "kubepods/pod" + uid, wantLevel: 2},
		{name: "cgroupfs burstable", dir: "kubepods/burstable/pod" + uid, wantLevel: 3},
		{name: "cgroupfs besteffort", dir: "kubepods/besteffort/pod" + uid, wantLevel: 3},
		{name: "systemd guaranteed", dir: "kubepods.slice/kubepods-pod" + systemdUID + ".slice", wantLevel: 2},
		{name: "systemd burstable", dir: "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod" + systemdUID + ".slice", wantLevel: 3},
		{name: "systemd besteffort", dir: "kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod" + systemdUID + ".slice", wantLevel: 3},
		{name: "custom cgroup root", dir: "node-agent/kubepods/burstable/pod" + uid, wantLevel: 4},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			want := filepath.Join(root, tt.dir)
			if err := os.MkdirAll(filepath.Join(want, "container"), 0o755); err != nil {
				t.Fatal(err)
			}
			// A pod with another UID must not match.
			if err := os.MkdirAll(filepath.Join(root, "kubepods", "pod"+"other"), 0o755); err != nil {
				t.Fatal(err)
			}
			id, level, path, err := podCgroupIn(root, uid)
			if err != nil {
				t.Fatalf("podCgroupIn: %v", err)
			}
			if path != want || level != tt.wantLevel {
				t.Errorf("podCgroupIn = (%s, level %d), want (%s, level %d)", path, level, want, tt.wantLevel)
			}
			wantID, err := CgroupID(want)
			if err != nil {
				t.Fatal(err)
			}
			if id != wantID || id == 0 {
				t.Errorf("cgroup id = %d, want %d", id, wantID)
			}
		})
	}
}

func TestPodCgroupErrors(t *testing.T) {
	root := t.TempDir()
	if _, _, _, err := podCgroupIn(root, "missing-uid"); !errors.Is(err, ErrPodCgroupNotFound) {
		t.Errorf("missing pod: err = %v, want ErrPodCgroupNotFound", err)
	}
	for _, uid := range []string{"", "../etc", "a/b"} {
		if _, _, _, err := podCgroupIn(root, uid); err == nil || !strings.Contains(err.Error(), "invalid pod UID") {
			t.Errorf("uid %q: err = %v, want invalid pod UID", uid, err)
		}
	}
}

// TestCgroupIDOfRoot checks CgroupID against the one id the kernel fixes:
// the root cgroup of the v2 hierarchy is 1. The kernel suites check ids of
// other cgroups against what the BPF programs report.
func TestCgroupIDOfRoot(t *testing.T) {
	requireRoot(t)
	root, err := CgroupV2Root()
	if err != nil {
		t.Skip(err)
	}
	id, err := CgroupID(root)
	if err != nil {
		t.Fatal(err)
	}
	if id != 1 {
		t.Errorf("CgroupID(%s) = %d, want 1 for the root cgroup", root, id)
	}
}

// TestDisabledMonitor checks the state New leaves when no program set
// loads: reachable here by forcing the LSM path on a kernel that refuses it.
func TestDisabledMonitor(t *testing.T) {
	requireRoot(t)
	reg := prometheus.NewRegistry()
	m, err := New(Config{ForcePath: PathLSM, Logger: discardLogger(), Registerer: reg})
	if err == nil {
		m.Close()
		t.Skip("the LSM path loads on this kernel, so the disabled state is not reachable")
	}
	if m == nil {
		t.Fatalf("New returned a nil Monitor with error %v", err)
	}
	defer m.Close()

	status := m.Status()
	if status.Path != PathDisabled || status.Reason == "" {
		t.Errorf("Status() = %+v, want path disabled with a reason", status)
	}
	if got := testutil.ToFloat64(m.metrics.path.WithLabelValues(string(PathDisabled))); got != 1 {
		t.Errorf("phantom_monitor_path{path=disabled} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.metrics.errors.WithLabelValues(reasonLoad)); got != 1 {
		t.Errorf("phantom_monitor_errors_total{reason=load} = %v, want 1", got)
	}
	pod := Pod{Namespace: "ns", Name: "p", UID: "u", CgroupID: 5, CgroupLevel: 2}
	if err := m.RegisterPod(pod); !errors.Is(err, ErrDisabled) {
		t.Errorf("RegisterPod = %v, want ErrDisabled", err)
	}
	if err := m.RegisterVolume("u", unix.Mkdev(0, 50)); !errors.Is(err, ErrDisabled) {
		t.Errorf("RegisterVolume = %v, want ErrDisabled", err)
	}
	if err := m.UnregisterPod("u"); !errors.Is(err, ErrDisabled) {
		t.Errorf("UnregisterPod = %v, want ErrDisabled", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := m.Run(ctx); err != nil {
		t.Errorf("Run on a disabled monitor = %v, want nil after the context ends", err)
	}
}

// TestRegistrationErrors checks registration on a loaded monitor.
func TestRegistrationErrors(t *testing.T) {
	requireRoot(t)
	m, err := New(Config{ForcePath: PathTracepoint, Logger: discardLogger()})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	defer m.Close()

	if err := m.RegisterVolume("unknown-uid", unix.Mkdev(0, 50)); !errors.Is(err, ErrPodNotRegistered) {
		t.Errorf("RegisterVolume for an unregistered pod = %v, want ErrPodNotRegistered", err)
	}
	if err := m.RegisterVolume("unknown-uid", 0); err == nil {
		t.Error("RegisterVolume with device 0 succeeded, want an error")
	}
	if err := m.RegisterPod(Pod{UID: "u"}); !errors.Is(err, ErrInvalidPod) {
		t.Errorf("RegisterPod without cgroup = %v, want ErrInvalidPod", err)
	}
	if err := m.UnregisterPod("never-registered"); err != nil {
		t.Errorf("UnregisterPod of an unknown UID = %v, want nil", err)
	}
	if err := m.UnregisterVolume(unix.Mkdev(0, 50)); err != nil {
		t.Errorf("UnregisterVolume of an unknown device = %v, want nil", err)
	}

	// Moving a pod to another cgroup keeps its volumes pointing at it.
	pod := Pod{Namespace: "ns", Name: "p", UID: "u", CgroupID: 100, CgroupLevel: 2}
	dev := unix.Mkdev(0, 51)
	if err := m.RegisterPod(pod); err != nil {
		t.Fatal(err)
	}
	if err := m.RegisterVolume(pod.UID, dev); err != nil {
		t.Fatal(err)
	}
	pod.CgroupID = 200
	if err := m.RegisterPod(pod); err != nil {
		t.Fatal(err)
	}
	var vol lsmPhantomVolume
	if err := m.obj.volumes.Lookup(kernelDev(dev), &vol); err != nil || vol.PodCgroup != 200 {
		t.Errorf("volume map entry = %+v (error %v), want pod cgroup 200", vol, err)
	}
	var old lsmPhantomPod
	if err := m.obj.pods.Lookup(uint64(100), &old); err == nil {
		t.Error("old pod cgroup 100 is still in the pod map")
	}

	if err := m.UnregisterPod(pod.UID); err != nil {
		t.Fatal(err)
	}
	if err := m.obj.volumes.Lookup(kernelDev(dev), &vol); err == nil {
		t.Error("volume map entry survived UnregisterPod")
	}
	var filter [volumeFilterWords]uint64
	if err := m.obj.filter.Get(&filter); err != nil {
		t.Fatal(err)
	}
	if filter != [volumeFilterWords]uint64{} {
		t.Error("volume filter is not empty after the last volume was removed")
	}
}

func TestAuditCorePattern(t *testing.T) {
	tests := []struct {
		name      string
		pattern   string
		wantLevel string
		wantText  string
	}{
		{name: "pipe", pattern: "|/usr/lib/systemd/systemd-coredump %P %u %g %s %t %c %h\n", wantLevel: "WARN", wantText: "piped to a program"},
		{name: "file", pattern: "core\n", wantLevel: "INFO", wantText: "written to files"},
		{name: "empty", pattern: "\n", wantLevel: "", wantText: ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "core_pattern")
			if err := os.WriteFile(file, []byte(tt.pattern), 0o644); err != nil {
				t.Fatal(err)
			}
			var logs strings.Builder
			m := &Monitor{log: slog.New(slog.NewTextHandler(&logs, nil))}

			if got, want := m.auditCorePattern(file), strings.TrimSpace(tt.pattern); got != want {
				t.Errorf("auditCorePattern = %q, want %q", got, want)
			}
			if tt.wantLevel == "" {
				if logs.Len() != 0 {
					t.Errorf("logged %q, want nothing", logs.String())
				}
				return
			}
			if !strings.Contains(logs.String(), "level="+tt.wantLevel) || !strings.Contains(logs.String(), tt.wantText) {
				t.Errorf("log = %q, want level %s with %q", logs.String(), tt.wantLevel, tt.wantText)
			}
		})
	}
}

func TestEventDueLimitsKubernetesEvents(t *testing.T) {
	m := &Monitor{cfg: Config{EventInterval: time.Minute}, lastEvent: map[eventKey]time.Time{}}
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	event := func(at time.Duration, actor uint32, kind string) Event {
		return Event{Time: start.Add(at), Pod: PodRef{UID: "u"}, Kind: kind, Action: ActionAudit, Actor: Process{PID: actor}}
	}
	steps := []struct {
		event Event
		want  bool
	}{
		{event(0, 1, KindFileRead), true},
		{event(time.Second, 1, KindFileRead), false},
		{event(time.Second, 2, KindFileRead), true},
		{event(time.Second, 1, KindFileOpen), true},
		{event(61*time.Second, 1, KindFileRead), true},
	}
	for i, s := range steps {
		if got := m.eventDue(s.event); got != s.want {
			t.Errorf("step %d: eventDue = %v, want %v", i, got, s.want)
		}
	}
}

// TestKernelTGIDInPIDNamespace runs a helper in a new pid namespace, where
// getpid() returns 1, and checks that kernelTGID returns its pid in the
// initial namespace, which the programs compare with.
func TestKernelTGIDInPIDNamespace(t *testing.T) {
	requireRoot(t)
	got, err := kernelTGID()
	if err != nil {
		t.Fatalf("kernelTGID: %v", err)
	}
	if int(got) != os.Getpid() {
		t.Errorf("kernelTGID() = %d in the initial pid namespace, want %d", got, os.Getpid())
	}

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=tgid")
	cmd.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	var stdout strings.Builder
	cmd.Stdout = &stdout
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("run helper in a new pid namespace: %v", err)
	}
	var nsPID, kernelPID int
	if _, err := fmt.Sscan(stdout.String(), &nsPID, &kernelPID); err != nil {
		t.Fatalf("parse helper output %q: %v", stdout.String(), err)
	}
	if nsPID != 1 {
		t.Errorf("helper getpid() = %d, want 1 in its new pid namespace", nsPID)
	}
	if kernelPID != cmd.Process.Pid {
		t.Errorf("helper kernelTGID() = %d, want its pid %d in the initial namespace", kernelPID, cmd.Process.Pid)
	}
}

// TestCloseStopsRun checks that Close ends a running Run with nil.
func TestCloseStopsRun(t *testing.T) {
	requireRoot(t)
	m, err := New(Config{ForcePath: PathTracepoint, Logger: discardLogger()})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	done := make(chan error, 1)
	go func() { done <- m.Run(context.Background()) }()

	// Wait until Run has opened its reader, so Close has one to close.
	deadline := time.Now().Add(eventTimeout)
	for {
		m.runMu.Lock()
		started := m.reader != nil
		m.runMu.Unlock()
		if started {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("Run did not open the ring buffer")
		}
		time.Sleep(10 * time.Millisecond)
	}

	if err := m.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run after Close = %v, want nil", err)
		}
	case <-time.After(eventTimeout):
		t.Fatal("Run did not return after Close")
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := m.Run(context.Background()); err == nil {
		t.Error("Run after Close = nil, want an error")
	}
}
