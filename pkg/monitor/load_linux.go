package monitor

import (
	"bufio"
	"errors"
	"fmt"
	"os"
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
	{program: "phantom_tp_read", hook: "tracepoint/syscalls/sys_enter_read"},
	{program: "phantom_tp_readv", hook: "tracepoint/syscalls/sys_enter_readv"},
	{program: "phantom_tp_pread64", hook: "tracepoint/syscalls/sys_enter_pread64"},
	{program: "phantom_tp_preadv", hook: "tracepoint/syscalls/sys_enter_preadv"},
	{program: "phantom_tp_preadv2", hook: "tracepoint/syscalls/sys_enter_preadv2", optional: true},
	{program: "phantom_tp_sendfile64", hook: "tracepoint/syscalls/sys_enter_sendfile64", optional: true},
	{program: "phantom_tp_splice", hook: "tracepoint/syscalls/sys_enter_splice", optional: true},
	{program: "phantom_tp_copy_file_range", hook: "tracepoint/syscalls/sys_enter_copy_file_range", optional: true},
	{program: "phantom_tp_mmap", hook: "tracepoint/syscalls/sys_enter_mmap"},
	{program: "phantom_tp_coredump", hook: "raw_tracepoint/sched_process_exit", optional: true},
}

// objects is one loaded and attached program set.
type objects struct {
	path     Path
	coll     *ebpf.Collection
	links    []link.Link
	programs []string
	missing  []string // optional hooks that failed to attach

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
// "" when that cannot be told without trying.
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
	if data, readErr := os.ReadFile(lockdownFile); readErr == nil {
		if mode := activeLockdown(string(data)); mode != "" && mode != "none" {
			reason = "EPERM: kernel lockdown " + mode
		}
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
