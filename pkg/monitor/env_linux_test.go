package monitor

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sys/unix"
)

// eventTimeout bounds the wait for an event to reach the audit log.
const eventTimeout = 5 * time.Second

// testEnv is a protected pod on the real kernel. Its pod cgroup contains a
// victim process that holds a canary and a second container cgroup. A
// Phantom tmpfs volume holds the canary in a file, and a cgroup of another
// pod hosts the attackers.
type testEnv struct {
	t        *testing.T
	mon      *Monitor
	audit    *auditBuffer
	recorder *fakeRecorder
	registry *prometheus.Registry

	pod         Pod
	podDir      string
	victimDir   string
	insiderDir  string
	outsiderDir string
	containerID string
	// attackerContainerID names the outsider's cgroup like a container's.
	attackerContainerID string
	victimPID           int
	volumeDev           uint64
	target              attackTarget
}

// newTestEnv loads the monitor on path and builds the pod. It returns nil
// after t.Skip when path is PathLSM and the kernel refuses LSM programs.
func newTestEnv(t *testing.T, path Path) *testEnv {
	t.Helper()
	return newTestEnvConfig(t, Config{ForcePath: path})
}

// newTestEnvConfig is newTestEnv with extra settings in cfg.
func newTestEnvConfig(t *testing.T, cfg Config) *testEnv {
	t.Helper()
	e := newTestEnvStopped(t, cfg)
	if e != nil {
		e.startRun()
	}
	return e
}

// newTestEnvStopped is newTestEnvConfig without starting Run, so events
// stay in the ring buffer until the test calls startRun.
func newTestEnvStopped(t *testing.T, cfg Config) *testEnv {
	t.Helper()
	requireRoot(t)

	e := &testEnv{t: t, audit: &auditBuffer{}, recorder: &fakeRecorder{}, registry: prometheus.NewRegistry()}
	path := cfg.ForcePath
	cfg.NodeName = "test-node"
	cfg.Logger = discardLogger()
	cfg.AuditLog = e.audit
	cfg.Events = e.recorder
	cfg.Registerer = e.registry
	cfg.EventInterval = time.Nanosecond
	mon, err := New(cfg)
	if err != nil {
		if path == PathLSM {
			return nil
		}
		t.Fatalf("New(ForcePath %q): %v", path, err)
	}
	e.mon = mon
	t.Cleanup(func() {
		if err := e.mon.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})

	e.canaryTarget()
	e.makeCgroups()
	e.startVictim()
	e.mountVolume()
	e.register(ModeAudit)
	return e
}

func (e *testEnv) startRun() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- e.mon.Run(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("Run: %v", err)
		}
	})
}

func (e *testEnv) canaryTarget() {
	buf := make([]byte, 16)
	if _, err := rand.Read(buf); err != nil {
		e.t.Fatal(err)
	}
	e.target.canary = []byte("phantom-canary-" + hex.EncodeToString(buf))
	e.pod = Pod{Namespace: "tenant", Name: "victim", UID: newUID(e.t)}
}

func newUID(t *testing.T) string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	h := hex.EncodeToString(b)
	return h[0:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// makeCgroups creates <root>/phantom-monitor-test-<pid>/pod<uid>/{<container>,insider}
// and <root>/phantom-monitor-test-<pid>/other-pod/attacker.
func (e *testEnv) makeCgroups() {
	root, err := CgroupV2Root()
	if err != nil {
		e.t.Fatal(err)
	}
	base := filepath.Join(root, fmt.Sprintf("phantom-monitor-test-%d-%s", os.Getpid(), e.pod.UID[:8]))
	containerHex := strings.Repeat(strings.ReplaceAll(e.pod.UID, "-", ""), 2)
	e.containerID = containerHex
	e.podDir = filepath.Join(base, "pod"+e.pod.UID)
	e.victimDir = filepath.Join(e.podDir, "cri-containerd-"+containerHex+".scope")
	e.insiderDir = filepath.Join(e.podDir, "insider")
	e.attackerContainerID = strings.Repeat("ab", 32)
	e.outsiderDir = filepath.Join(base, "other-pod", "cri-containerd-"+e.attackerContainerID+".scope")

	dirs := []string{base, e.podDir, e.victimDir, e.insiderDir, filepath.Dir(e.outsiderDir), e.outsiderDir}
	for _, dir := range dirs {
		if err := os.Mkdir(dir, 0o755); err != nil {
			e.t.Fatal(err)
		}
	}
	e.t.Cleanup(func() {
		for i := len(dirs) - 1; i >= 0; i-- {
			removeCgroup(e.t, dirs[i])
		}
	})

	id, level, path, err := podCgroupIn(root, e.pod.UID)
	if err != nil {
		e.t.Fatalf("podCgroupIn(%s): %v", root, err)
	}
	if path != e.podDir {
		e.t.Fatalf("podCgroupIn found %s, want %s", path, e.podDir)
	}
	e.pod.CgroupID, e.pod.CgroupLevel = id, level
}

// removeCgroup removes a cgroup directory once its processes have exited.
func removeCgroup(t *testing.T, dir string) {
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := os.Remove(dir)
		if err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("remove cgroup %s: %v", dir, err)
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// helperCommand returns a command that runs the test binary as a helper in
// the cgroup at dir.
func helperCommand(t *testing.T, dir, helper string, env ...string) (*exec.Cmd, func()) {
	t.Helper()
	cg, err := os.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), append([]string{helperEnv + "=" + helper}, env...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{UseCgroupFD: true, CgroupFD: int(cg.Fd())}
	return cmd, func() { cg.Close() }
}

func (e *testEnv) startVictim() {
	cmd, closeCgroup := helperCommand(e.t, e.victimDir, "victim", canaryEnv+"="+string(e.target.canary))
	defer closeCgroup()
	stdin, err := cmd.StdinPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		e.t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		e.t.Fatalf("start victim: %v", err)
	}
	e.t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})

	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		e.t.Fatalf("read canary address from victim: %v", err)
	}
	addr, err := strconv.ParseUint(strings.TrimSpace(line), 10, 64)
	if err != nil {
		e.t.Fatalf("parse canary address %q: %v", line, err)
	}
	e.victimPID = cmd.Process.Pid
	e.target.pid = e.victimPID
	e.target.addr = uintptr(addr)
}

// mountVolume mounts a tmpfs named like a Phantom volume and writes the
// canary into a secret file on it.
func (e *testEnv) mountVolume() {
	dir := filepath.Join(e.t.TempDir(), "volume")
	if err := os.Mkdir(dir, 0o755); err != nil {
		e.t.Fatal(err)
	}
	if err := unix.Mount("phantom", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "size=1m,mode=0755"); err != nil {
		e.t.Fatalf("mount tmpfs: %v", err)
	}
	e.t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			e.t.Errorf("unmount %s: %v", dir, err)
		}
	})
	e.target.file = filepath.Join(dir, "password")
	if err := os.WriteFile(e.target.file, e.target.canary, 0o444); err != nil {
		e.t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		e.t.Fatal(err)
	}
	e.volumeDev = st.Dev
}

// register registers the pod in mode, and its volume.
func (e *testEnv) register(mode Mode) {
	e.t.Helper()
	e.pod.Mode = mode
	if err := e.mon.RegisterPod(e.pod); err != nil {
		e.t.Fatalf("RegisterPod: %v", err)
	}
	if err := e.mon.RegisterVolume(e.pod.UID, e.volumeDev); err != nil {
		e.t.Fatalf("RegisterVolume: %v", err)
	}
}

// attackResult is how an attacker process ended.
type attackResult struct {
	pid    int
	status syscall.WaitStatus
	stderr string
}

func (r attackResult) String() string {
	switch {
	case r.status.Signaled():
		return fmt.Sprintf("pid %d killed by signal %d (%v)", r.pid, r.status.Signal(), r.status.Signal())
	case r.status.Exited():
		return fmt.Sprintf("pid %d exited %d (stderr %q)", r.pid, r.status.ExitStatus(), r.stderr)
	}
	return fmt.Sprintf("pid %d status %#x", r.pid, uint32(r.status))
}

// attack runs an attacker helper in the cgroup at dir and waits for it.
func (e *testEnv) attack(dir, name string) attackResult {
	e.t.Helper()
	cmd, closeCgroup := helperCommand(e.t, dir, "attacker",
		attackEnv+"="+name,
		pidEnv+"="+strconv.Itoa(e.target.pid),
		addrEnv+"="+strconv.FormatUint(uint64(e.target.addr), 10),
		fileEnv+"="+e.target.file,
		moveEnv+"="+e.outsiderDir,
		canaryEnv+"="+string(e.target.canary),
	)
	defer closeCgroup()
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		e.t.Fatalf("start attacker: %v", err)
	}
	_ = cmd.Wait()
	e.resumeVictim()
	return attackResult{
		pid:    cmd.Process.Pid,
		status: cmd.ProcessState.Sys().(syscall.WaitStatus),
		stderr: stderr.String(),
	}
}

// resumeVictim continues the victim in case a killed tracer left it in the
// stop that PTRACE_ATTACH sends.
func (e *testEnv) resumeVictim() {
	_ = unix.Kill(e.victimPID, unix.SIGCONT)
}

// waitRecord waits for an audit record that matches.
func (e *testEnv) waitRecord(match func(auditRecord) bool) (auditRecord, bool) {
	deadline := time.Now().Add(eventTimeout)
	for time.Now().Before(deadline) {
		for _, r := range e.audit.records(e.t) {
			if match(r) {
				return r, true
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return auditRecord{}, false
}

// recordsOf returns the audit records whose actor is pid.
func (e *testEnv) recordsOf(pid int) []auditRecord {
	var out []auditRecord
	for _, r := range e.audit.records(e.t) {
		if int(r.Actor.PID) == pid {
			out = append(out, r)
		}
	}
	return out
}

// auditBuffer collects the JSON audit log.
type auditBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *auditBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *auditBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// auditRecord is one line of the JSON audit log.
type auditRecord struct {
	Msg       string `json:"msg"`
	Level     string `json:"level"`
	Node      string `json:"node"`
	Path      string `json:"path"`
	Kind      string `json:"kind"`
	Action    string `json:"action"`
	Container string `json:"container"`
	Pod       struct {
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
		UID       string `json:"uid"`
		CgroupID  uint64 `json:"cgroup_id"`
	} `json:"pod"`
	Actor struct {
		PID       uint32 `json:"pid"`
		Comm      string `json:"comm"`
		CgroupID  uint64 `json:"cgroup_id"`
		Cgroup    string `json:"cgroup"`
		Container string `json:"container"`
	} `json:"actor"`
	Target struct {
		PID    uint32 `json:"pid"`
		Comm   string `json:"comm"`
		Cgroup string `json:"cgroup"`
		Device uint64 `json:"device"`
		Inode  uint64 `json:"inode"`
		File   string `json:"file"`
		Detail uint32 `json:"detail"`
	} `json:"target"`
}

func (b *auditBuffer) records(t *testing.T) []auditRecord {
	var out []auditRecord
	for _, line := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		if line == "" {
			continue
		}
		var r auditRecord
		if err := json.Unmarshal([]byte(line), &r); err != nil {
			t.Fatalf("audit log line is not JSON: %v: %q", err, line)
		}
		out = append(out, r)
	}
	return out
}

// fakeRecorder records Kubernetes Events in memory.
type fakeRecorder struct {
	mu     sync.Mutex
	events []recordedEvent
}

type recordedEvent struct {
	Pod     PodRef
	Reason  string
	Message string
}

func (f *fakeRecorder) PodEvent(pod PodRef, reason, message string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.events = append(f.events, recordedEvent{Pod: pod, Reason: reason, Message: message})
}

func (f *fakeRecorder) all() []recordedEvent {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]recordedEvent(nil), f.events...)
}

func discardLogger() *slog.Logger {
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
