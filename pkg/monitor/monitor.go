package monitor

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Mode selects what the monitor does with an access from outside a pod.
type Mode string

const (
	// ModeAudit records the access and lets it proceed.
	ModeAudit Mode = "audit"
	// ModeEnforce records the access and stops it: EPERM on the LSM path,
	// SIGKILL to the caller on the tracepoint path.
	ModeEnforce Mode = "enforce"
)

// Path names the set of eBPF programs the monitor runs.
type Path string

const (
	// PathAuto, the zero value of Config.ForcePath, tries the LSM path and
	// falls back to the tracepoint path.
	PathAuto Path = ""
	// PathLSM uses BPF LSM hooks, which deny before the kernel grants access.
	PathLSM Path = "lsm"
	// PathTracepoint uses syscall tracepoints, which record and kill.
	PathTracepoint Path = "tracepoint"
	// PathDisabled means no program is loaded.
	PathDisabled Path = "disabled"
)

// Event kinds, the kind label of phantom_monitor_events_total.
const (
	KindPtrace      = "ptrace"       // ptrace attach-mode access (LSM: also process_vm_*)
	KindProcessVM   = "process_vm"   // process_vm_readv or process_vm_writev
	KindProcMem     = "proc_mem"     // open of /proc/<pid>/mem
	KindProcEnviron = "proc_environ" // open of /proc/<pid>/environ
	KindFileOpen    = "file_open"    // open of a Phantom volume file
	KindFileRead    = "file_read"    // read of a Phantom volume file
	KindFileMmap    = "file_mmap"    // mmap of a Phantom volume file
	KindFileWrite   = "file_write"   // write to a Phantom volume file (LSM path)
	KindCoreDump    = "coredump"     // core dump written for a protected process
)

// Event actions, the action label of phantom_monitor_events_total.
const (
	ActionAudit = "audit" // recorded only
	ActionDeny  = "deny"  // the LSM hook returned EPERM
	ActionKill  = "kill"  // the caller was sent SIGKILL
)

// Sentinel errors.
var (
	// ErrUnsupported means the platform has no eBPF monitor.
	ErrUnsupported = errors.New("runtime protection monitor is only supported on Linux")
	// ErrDisabled means no program is loaded, so registrations have no effect.
	ErrDisabled = errors.New("runtime protection monitor is disabled")
	// ErrPodNotRegistered means a volume names a pod UID that RegisterPod
	// has not registered.
	ErrPodNotRegistered = errors.New("pod not registered with the runtime protection monitor")
	// ErrInvalidPod means a Pod field is missing or out of range.
	ErrInvalidPod = errors.New("invalid pod registration")
	// ErrPodCgroupNotFound means no kubelet pod cgroup exists for a pod UID.
	ErrPodCgroupNotFound = errors.New("pod cgroup not found")
)

// PodRef names a pod for events.
type PodRef struct {
	Namespace string
	Name      string
	UID       string
}

// EventRecorder publishes a Kubernetes Event on a pod. Implementations
// record a Warning event with the given reason and message. They must not
// block for long, because the monitor calls them from its event loop.
type EventRecorder interface {
	PodEvent(pod PodRef, reason, message string)
}

// Config configures a Monitor.
type Config struct {
	// NodeName is written into every event.
	NodeName string
	// Logger receives operational messages. Nil means slog.Default().
	Logger *slog.Logger
	// AuditLog receives one JSON line per event. Nil writes events through
	// Logger instead.
	AuditLog io.Writer
	// Events publishes Kubernetes Events; nil publishes none.
	Events EventRecorder
	// Registerer takes the monitor's metrics; nil registers none.
	Registerer prometheus.Registerer
	// ForcePath selects PathLSM or PathTracepoint only, without fallback.
	// PathAuto tries LSM first.
	ForcePath Path
	// TraceReads attaches the tracepoint path to the read family too (read,
	// readv, pread64, preadv, preadv2, sendfile64, splice, copy_file_range
	// and mmap). Without it, the tracepoint path judges file access when a
	// descriptor is opened, which covers every reader that opens the file
	// itself. With it, a reader holding a descriptor it got otherwise is
	// caught too: one passed over a Unix socket by a process of the pod, or
	// opened before the reader left the pod's cgroup. The cost is a program
	// run on every read on the node. The LSM path always checks reads.
	TraceReads bool
	// EventInterval is the minimum time between two Kubernetes Events for
	// the same pod, kind, action and acting process. Zero means one minute.
	// Audit lines and metrics are never suppressed.
	EventInterval time.Duration

	// probeReadsOnly and noTaskKfuncs make the tracepoint path load the
	// variant for kernels without bpf_rdonly_cast() to void, or without task
	// kfuncs in tracepoint programs; for tests.
	probeReadsOnly bool
	noTaskKfuncs   bool
	// ringBufferSize overrides the ring buffer's size in bytes (a power of
	// two, at least the page size); for tests.
	ringBufferSize uint32
}

func (c Config) validate() error {
	var errs []error
	switch c.ForcePath {
	case PathAuto, PathLSM, PathTracepoint:
	default:
		errs = append(errs, fmt.Errorf("invalid ForcePath %q: use %q, %q or empty for automatic", c.ForcePath, PathLSM, PathTracepoint))
	}
	if c.EventInterval < 0 {
		errs = append(errs, fmt.Errorf("invalid EventInterval %s: use a positive duration or 0 for one minute", c.EventInterval))
	}
	return errors.Join(errs...)
}

// Status describes the active attach path.
type Status struct {
	// Path is PathLSM, PathTracepoint or PathDisabled.
	Path Path
	// Reason explains why the LSM path is not active, or why nothing loaded.
	Reason string
	// Programs lists the attached programs as hook names, such as
	// "lsm/file_open" or "tracepoint/syscalls/sys_enter_ptrace".
	Programs []string
	// Limits lists accesses the active path cannot see on this kernel.
	Limits []string
	// Lost counts events dropped because the ring buffer was full.
	Lost uint64
	// CorePattern is the node's /proc/sys/kernel/core_pattern at startup.
	CorePattern string
}

// Pod is a protected pod.
type Pod struct {
	Namespace string
	Name      string
	UID       string
	// CgroupID is the cgroup v2 id of the pod-level cgroup (see PodCgroup).
	CgroupID uint64
	// CgroupLevel is that cgroup's level: the number of directories between
	// it and the root of the cgroup v2 hierarchy, which is level 0.
	CgroupLevel int
	// Mode defaults to ModeAudit.
	Mode Mode
}

// maxCgroupLevel mirrors PHANTOM_MAX_CGROUP_DEPTH in bpf/phantom.h.
const maxCgroupLevel = 16

func (p Pod) validate() error {
	var errs []error
	if p.UID == "" {
		errs = append(errs, errors.New("UID is empty"))
	}
	if p.CgroupID == 0 {
		errs = append(errs, errors.New("CgroupID is 0: look it up with PodCgroup"))
	}
	if p.CgroupLevel < 1 || p.CgroupLevel >= maxCgroupLevel {
		errs = append(errs, fmt.Errorf("CgroupLevel %d is outside 1..%d", p.CgroupLevel, maxCgroupLevel-1))
	}
	switch p.Mode {
	case "", ModeAudit, ModeEnforce:
	default:
		errs = append(errs, fmt.Errorf("mode %q is unknown: use %q or %q", p.Mode, ModeAudit, ModeEnforce))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w for pod %s/%s (uid %q): %w", ErrInvalidPod, p.Namespace, p.Name, p.UID, errors.Join(errs...))
	}
	return nil
}

func (p Pod) ref() PodRef {
	return PodRef{Namespace: p.Namespace, Name: p.Name, UID: p.UID}
}

// Event is one recorded access.
type Event struct {
	Time   time.Time
	Node   string
	Path   Path
	Kind   string
	Action string
	// Pod is the target pod; empty when it was unregistered before the
	// event was read.
	Pod       PodRef
	PodCgroup uint64
	// Container is the target process's container id, taken from the name
	// of its cgroup; empty for file targets or when the name carries none.
	Container string
	Actor     Process
	Target    Target
}

// Process describes the acting process.
type Process struct {
	PID      uint32
	TID      uint32
	Comm     string
	CgroupID uint64
	// Cgroup is the name of the process's own cgroup directory.
	Cgroup string
	// Container is the container id in that name, if it has one: the
	// acting container when the actor runs in another pod.
	Container string
}

// Target describes what was accessed: a process or a file.
type Target struct {
	PID      uint32
	Comm     string
	CgroupID uint64
	Cgroup   string
	// Device is the file's device number as stat(2) reports it.
	Device uint64
	Inode  uint64
	File   string
	// Detail is the ptrace mode (LSM path), ptrace request (tracepoint
	// path), 1 for process_vm_writev, or the exit status of a core dump.
	Detail uint32
}
