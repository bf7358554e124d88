package monitor

import (
	"bufio"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

const (
	securityLSMFile  = "/sys/kernel/security/lsm"
	lockdownFile     = "/sys/kernel/security/lockdown"
	tracefsMountPath = "/sys/kernel/tracing"
)

// attachment ties a program of an object to the hook it attaches to.
type attachment struct {
	program string
	// hook is "lsm/<hook>", "tracepoint/<group>/<event>" or
	// "raw_tracepoint/<event>".
	hook string
	// optional hooks may be missing: open(2) and creat(2) tracepoints do not
	// exist on arm64, and core dump detection is best effort.
	optional bool
	// reads marks the tracepoint path's read-family hooks, attached only
	// with Config.TraceReads.
	reads bool
}

var lsmAttachments = []attachment{
	{program: "phantom_lsm_ptrace_access_check", hook: "lsm/ptrace_access_check"},
	{program: "phantom_lsm_file_open", hook: "lsm/file_open"},
	{program: "phantom_lsm_file_permission", hook: "lsm/file_permission"},
	{program: "phantom_lsm_mmap_file", hook: "lsm/mmap_file"},
	{program: "phantom_lsm_coredump", hook: "raw_tracepoint/sched_process_exit", optional: true},
}

var tracepointAttachments = []attachment{
	{program: "phantom_tp_ptrace", hook: "tracepoint/syscalls/sys_enter_ptrace"},
	{program: "phantom_tp_process_vm_readv", hook: "tracepoint/syscalls/sys_enter_process_vm_readv"},
	{program: "phantom_tp_process_vm_writev", hook: "tracepoint/syscalls/sys_enter_process_vm_writev"},
	{program: "phantom_tp_openat", hook: "tracepoint/syscalls/sys_exit_openat"},
	{program: "phantom_tp_openat2", hook: "tracepoint/syscalls/sys_exit_openat2", optional: true},
	{program: "phantom_tp_open", hook: "tracepoint/syscalls/sys_exit_open", optional: true},
	{program: "phantom_tp_creat", hook: "tracepoint/syscalls/sys_exit_creat", optional: true},
	{program: "phantom_tp_open_by_handle_at", hook: "tracepoint/syscalls/sys_exit_open_by_handle_at", optional: true},
	{program: "phantom_tp_read", hook: "tracepoint/syscalls/sys_enter_read", reads: true},
	{program: "phantom_tp_readv", hook: "tracepoint/syscalls/sys_enter_readv", reads: true},
	{program: "phantom_tp_pread64", hook: "tracepoint/syscalls/sys_enter_pread64", reads: true},
	{program: "phantom_tp_preadv", hook: "tracepoint/syscalls/sys_enter_preadv", reads: true},
	{program: "phantom_tp_preadv2", hook: "tracepoint/syscalls/sys_enter_preadv2", optional: true, reads: true},
	{program: "phantom_tp_sendfile64", hook: "tracepoint/syscalls/sys_enter_sendfile64", optional: true, reads: true},
	{program: "phantom_tp_splice", hook: "tracepoint/syscalls/sys_enter_splice", optional: true, reads: true},
	{program: "phantom_tp_copy_file_range", hook: "tracepoint/syscalls/sys_enter_copy_file_range", optional: true, reads: true},
	{program: "phantom_tp_mmap", hook: "tracepoint/syscalls/sys_enter_mmap", reads: true},
	{program: "phantom_tp_coredump", hook: "raw_tracepoint/sched_process_exit", optional: true},
}

// objects is one loaded and attached program set.
type objects struct {
	path     Path
	coll     *ebpf.Collection
	links    []link.Link
	programs []string
	missing  []string // optional hooks that failed to attach
	attached []attachment

	pods    *ebpf.Map
	volumes *ebpf.Map
	events  *ebpf.Map
	filter  *ebpf.Variable
	lost    *ebpf.Variable
	hits    *ebpf.Variable
	armed   *ebpf.Variable
}

func (o *objects) close() error {
	var errs []error
	for _, l := range o.links {
		errs = append(errs, l.Close())
	}
	o.links = nil
	if o.coll != nil {
		o.coll.Close()
		o.coll = nil
	}
	return errors.Join(errs...)
}

// loadObjects loads the program set of path from spec with the given
// constants and attaches it.
func loadObjects(path Path, spec *ebpf.CollectionSpec, attachments []attachment, consts map[string]any, ringBufferSize uint32) (*objects, error) {
	spec = spec.Copy()
	if ringBufferSize != 0 {
		spec.Maps["phantom_events"].MaxEntries = ringBufferSize
	}
	for name, value := range consts {
		v, ok := spec.Variables[name]
		if !ok {
			return nil, fmt.Errorf("load %s programs: object has no variable %s", path, name)
		}
		if err := v.Set(value); err != nil {
			return nil, fmt.Errorf("load %s programs: set %s: %w", path, name, err)
		}
	}
	coll, err := ebpf.NewCollection(spec)
	if err != nil {
		return nil, fmt.Errorf("load %s programs: %w", path, err)
	}
	o := &objects{
		path:    path,
		coll:    coll,
		pods:    coll.Maps["phantom_pods"],
		volumes: coll.Maps["phantom_volumes"],
		events:  coll.Maps["phantom_events"],
		filter:  coll.Variables["phantom_volume_filter"],
		lost:    coll.Variables["phantom_lost_events"],
		hits:    coll.Variables["phantom_selftest_hits"],
		armed:   coll.Variables["phantom_selftest_armed"],
	}
	if o.pods == nil || o.volumes == nil || o.events == nil || o.filter == nil || o.lost == nil || o.hits == nil || o.armed == nil {
		o.close()
		return nil, fmt.Errorf("load %s programs: object lacks a map or variable the monitor uses", path)
	}

	for _, a := range attachments {
		l, err := attach(a.hook, coll.Programs[a.program])
		if err != nil && a.optional {
			o.missing = append(o.missing, a.hook)
			continue
		}
		if err != nil {
			o.close()
			return nil, fmt.Errorf("attach %s: %w", a.hook, err)
		}
		o.links = append(o.links, l)
		o.programs = append(o.programs, a.hook)
		o.attached = append(o.attached, a)
	}
	return o, nil
}

func attach(hook string, prog *ebpf.Program) (link.Link, error) {
	if prog == nil {
		return nil, errors.New("program not found in the object")
	}
	kind, name, _ := strings.Cut(hook, "/")
	switch kind {
	case "lsm":
		return link.AttachLSM(link.LSMOptions{Program: prog})
	case "tracepoint":
		group, event, _ := strings.Cut(name, "/")
		return link.Tracepoint(group, event, prog, nil)
	case "raw_tracepoint":
		return link.AttachRawTracepoint(link.RawTracepointOptions{Name: name, Program: prog})
	}
	return nil, fmt.Errorf("unknown hook kind %q", kind)
}

// selfTest proves that the attached programs run: it opens a file, which
// runs the open hook in the daemon, and checks the hook's counter. A BPF LSM
// program attaches even when the bpf LSM is not active, and then never runs.
func (o *objects) selfTest() error {
	if err := o.armed.Set(uint32(1)); err != nil {
		return fmt.Errorf("arm self-test: %w", err)
	}
	defer o.armed.Set(uint32(0))

	var before, after uint64
	if err := o.hits.Get(&before); err != nil {
		return fmt.Errorf("read self-test counter: %w", err)
	}
	f, err := os.Open("/proc/self/stat")
	if err != nil {
		return fmt.Errorf("open self-test file: %w", err)
	}
	f.Close()
	if err := o.hits.Get(&after); err != nil {
		return fmt.Errorf("read self-test counter: %w", err)
	}
	if after == before {
		return errors.New("programs attached but the open hook did not run")
	}
	return nil
}

// lsmUnavailable returns why BPF LSM programs cannot work on this kernel, or
// "" when only loading them can tell.
func lsmUnavailable() string {
	data, err := os.ReadFile(securityLSMFile)
	if err != nil {
		return ""
	}
	active := strings.TrimSpace(string(data))
	for _, name := range strings.Split(active, ",") {
		if name == "bpf" {
			return ""
		}
	}
	return fmt.Sprintf("bpf is not an active LSM (%s lists %q): boot the node with lsm=...,bpf", securityLSMFile, active)
}

// describeLSMError explains a failed LSM load; EPERM as root usually means
// kernel lockdown or a kernel that refuses BPF LSM programs.
func describeLSMError(err error) string {
	if !errors.Is(err, unix.EPERM) {
		return err.Error()
	}
	reason := "EPERM"
	data, readErr := os.ReadFile(lockdownFile)
	switch {
	case readErr != nil:
		reason = "EPERM, kernel lockdown mode unknown (" + lockdownFile + " is not readable)"
	case activeLockdown(string(data)) != "" && activeLockdown(string(data)) != "none":
		reason = "EPERM: kernel lockdown " + activeLockdown(string(data))
	}
	// cilium/ebpf suggests a memlock limit on every EPERM; the limit is
	// already removed, so the hint would only mislead.
	detail := strings.Replace(err.Error(), " (MEMLOCK may be too low, consider rlimit.RemoveMemlock)", "", 1)
	return fmt.Sprintf("%s: the kernel refused BPF LSM programs (%s)", reason, detail)
}

// activeLockdown returns the bracketed entry of the lockdown file, as in
// "none [integrity] confidentiality".
func activeLockdown(content string) string {
	start := strings.IndexByte(content, '[')
	end := strings.IndexByte(content, ']')
	if start < 0 || end < start {
		return ""
	}
	return content[start+1 : end]
}

// ensureTracefs mounts tracefs at /sys/kernel/tracing when no tracefs or
// debugfs tracing directory is mounted: attaching a tracepoint needs its id
// from tracefs. It reports whether it mounted one.
func ensureTracefs() (bool, error) {
	for _, candidate := range []struct {
		path  string
		magic int64
	}{
		{tracefsMountPath, unix.TRACEFS_MAGIC},
		{"/sys/kernel/debug/tracing", unix.TRACEFS_MAGIC},
		{"/sys/kernel/debug/tracing", unix.DEBUGFS_MAGIC},
	} {
		var st unix.Statfs_t
		if unix.Statfs(candidate.path, &st) == nil && st.Type == candidate.magic {
			return false, nil
		}
	}
	if tracefsMounted() {
		return false, nil
	}
	if err := unix.Mount("tracefs", tracefsMountPath, "tracefs", unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, ""); err != nil {
		return false, fmt.Errorf("mount tracefs at %s: %w", tracefsMountPath, err)
	}
	return true, nil
}

// tracefsMounted reports whether /proc/self/mountinfo lists a tracefs.
func tracefsMounted() bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()

	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		if _, after, ok := strings.Cut(scanner.Text(), " - "); ok && strings.HasPrefix(after, "tracefs ") {
			return true
		}
	}
	return false
}

// load tries the permitted paths in order and records the outcome in
// m.status.
func (m *Monitor) load() error {
	tgid, err := kernelTGID()
	if err != nil {
		tgid = uint32(os.Getpid())
		m.log.Warn("could not learn the daemon's process id in the initial pid namespace; using getpid(), which is wrong if the daemon has its own pid namespace",
			slog.Uint64("pid", uint64(tgid)), slog.Any("error", err))
	}
	var lsmErr error

	if m.cfg.ForcePath != PathTracepoint {
		obj, err := m.loadLSM(tgid)
		if err == nil {
			m.activate(obj, "")
			return nil
		}
		lsmErr = err
		m.status.Reason = err.Error()
		if m.cfg.ForcePath == PathLSM {
			m.status.Path = PathDisabled
			return err
		}
		m.log.Info("BPF LSM path unavailable, falling back to syscall tracepoints", slog.String("reason", m.status.Reason))
	} else {
		m.status.Reason = "tracepoint path forced by configuration"
	}

	obj, err := m.loadTracepoints(tgid)
	if err != nil {
		m.status.Path = PathDisabled
		return errors.Join(lsmErr, err)
	}
	m.activate(obj, m.status.Reason)
	return nil
}

func (m *Monitor) activate(obj *objects, reason string) {
	m.obj = obj
	m.status.Path = obj.path
	m.status.Reason = reason
	m.status.Programs = slices.Clone(obj.programs)
}

func (m *Monitor) loadLSM(tgid uint32) (*objects, error) {
	if reason := lsmUnavailable(); reason != "" {
		return nil, errors.New(reason)
	}
	spec, err := loadLsm()
	if err != nil {
		return nil, err
	}
	obj, err := loadObjects(PathLSM, spec, lsmAttachments, map[string]any{"phantom_daemon_tgid": tgid}, m.cfg.ringBufferSize)
	if err != nil {
		// A refused LSM load is expected where the fallback runs; count
		// it as a monitor failure only when nothing else may load.
		if m.cfg.ForcePath == PathLSM {
			m.countLoadError(err)
		}
		m.logVerifierError(err)
		return nil, errors.New(describeLSMError(err))
	}
	if err := obj.selfTest(); err != nil {
		obj.close()
		return nil, fmt.Errorf("BPF LSM self-test failed, the bpf LSM is probably inactive: %w", err)
	}
	return obj, nil
}

func (m *Monitor) loadTracepoints(tgid uint32) (*objects, error) {
	mounted, err := ensureTracefs()
	if err != nil {
		m.metrics.errors.WithLabelValues(reasonAttach).Inc()
		return nil, err
	}
	if mounted {
		m.log.Info("mounted tracefs for syscall tracepoints", slog.String("path", tracefsMountPath))
	}
	spec, err := loadTracepoint()
	if err != nil {
		return nil, err
	}
	obj, err := m.loadTracepointVariant(spec, tgid)
	if err != nil {
		m.countLoadError(err)
		return nil, err
	}
	if err := obj.selfTest(); err != nil {
		obj.close()
		return nil, fmt.Errorf("tracepoint self-test failed: %w", err)
	}
	return obj, nil
}

// kernelTGID returns the calling process's thread group id in the initial
// pid namespace, the id bpf_get_current_pid_tgid() reports, by running a
// program through BPF_PROG_TEST_RUN in this process's context. It differs
// from os.Getpid() when the daemon runs without hostPID.
func kernelTGID() (uint32, error) {
	var objs selfTgidObjects
	if err := loadSelfTgidObjects(&objs, nil); err != nil {
		return 0, fmt.Errorf("load self tgid program: %w", err)
	}
	defer objs.Close()

	tgid, err := objs.PhantomSelfTgid.Run(&ebpf.RunOptions{Context: []uint64{0}})
	if err != nil {
		return 0, fmt.Errorf("run self tgid program: %w", err)
	}
	if tgid == 0 {
		return 0, errors.New("run self tgid program: returned 0")
	}
	return tgid, nil
}

// tracepointHooks returns the tracepoint path's attachments, with the
// read-family hooks only when Config.TraceReads is set.
func (m *Monitor) tracepointHooks() []attachment {
	var hooks []attachment
	for _, a := range tracepointAttachments {
		if !a.reads || m.cfg.TraceReads {
			hooks = append(hooks, a)
		}
	}
	return hooks
}

// tracepointVariant selects optional kernel features of the tracepoint
// programs. Kernels without a feature reject its branch in the verifier,
// so the loader tries the variants in order of preference.
type tracepointVariant struct {
	// fdAccess is phantom_fd_access in bpf/monitor_tracepoint.bpf.c: 2 reads
	// from descriptor to device with plain loads, 1 adds a probe read, 0
	// uses four probe reads. On Linux 6.18 level 2 costs about 35 ns less
	// per read and open than level 0 (BenchmarkOpenReadClose, bpf-ns/run).
	fdAccess uint32
	// taskKfuncs resolves the target pid of ptrace and process_vm_* with
	// bpf_task_from_vpid(); without it those hooks stay inactive.
	taskKfuncs bool
}

var tracepointVariants = []tracepointVariant{
	{fdAccess: 2, taskKfuncs: true},
	{fdAccess: 1, taskKfuncs: true},
	{fdAccess: 0, taskKfuncs: true},
	{fdAccess: 2, taskKfuncs: false},
	{fdAccess: 1, taskKfuncs: false},
	{fdAccess: 0, taskKfuncs: false},
}

// loadTracepointVariant loads the first variant the kernel accepts and
// records what a fallback variant leaves uncovered in m.status.Limits.
func (m *Monitor) loadTracepointVariant(spec *ebpf.CollectionSpec, tgid uint32) (*objects, error) {
	var errs []error
	for _, v := range tracepointVariants {
		if m.cfg.probeReadsOnly && v.fdAccess > 0 || m.cfg.noTaskKfuncs && v.taskKfuncs {
			continue
		}
		consts := map[string]any{
			"phantom_daemon_tgid": tgid,
			"phantom_fd_access":   v.fdAccess,
			"phantom_task_kfuncs": v.taskKfuncs,
		}
		obj, err := loadObjects(PathTracepoint, spec, m.tracepointHooks(), consts, m.cfg.ringBufferSize)
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			m.log.Debug("kernel rejects a tracepoint program variant, trying the next",
				slog.Uint64("fd_access", uint64(v.fdAccess)), slog.Bool("task_kfuncs", v.taskKfuncs), slog.Any("error", err))
			errs = append(errs, err)
			continue
		}
		if err != nil {
			return nil, err
		}
		if !m.cfg.TraceReads {
			m.status.Limits = append(m.status.Limits,
				"reads through a descriptor the reader did not open itself (passed over a Unix socket, or opened before the reader left the pod's cgroup) are not seen: set TraceReads")
		}
		if !v.taskKfuncs {
			m.status.Limits = append(m.status.Limits,
				"ptrace attach and process_vm_readv/writev are not detected: the kernel does not let tracepoint programs call bpf_task_from_vpid() or bpf_task_from_pid()")
		}
		m.log.Debug("tracepoint programs loaded", slog.Uint64("fd_access", uint64(v.fdAccess)), slog.Bool("task_kfuncs", v.taskKfuncs))
		return obj, nil
	}
	return nil, errors.Join(errs...)
}

// countLoadError counts a program set that failed to load or attach.
func (m *Monitor) countLoadError(err error) {
	reason := reasonLoad
	if strings.HasPrefix(err.Error(), "attach ") {
		reason = reasonAttach
	}
	m.metrics.errors.WithLabelValues(reason).Inc()
	m.logVerifierError(err)
}

// logVerifierError logs the end of the verifier's log when err carries one.
func (m *Monitor) logVerifierError(err error) {
	var verr *ebpf.VerifierError
	if errors.As(err, &verr) {
		m.log.Debug("eBPF verifier log, last lines", slog.String("log", fmt.Sprintf("%+20v", verr)))
	}
}
