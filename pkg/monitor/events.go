package monitor

import (
	"fmt"
	"log/slog"
	"strings"
)

// Kubernetes Event reasons.
const (
	ReasonAccessAudited = "PhantomAccessAudited"
	ReasonAccessDenied  = "PhantomAccessDenied"
	ReasonProcessKilled = "PhantomProcessKilled"
	ReasonCoreDumped    = "PhantomCoreDumped"
)

// Kind and action codes of struct phantom_event, mirroring enum
// phantom_kind and enum phantom_action in bpf/phantom.h.
var (
	kindNames = map[uint32]string{
		1: KindPtrace,
		2: KindProcessVM,
		3: KindProcMem,
		4: KindProcEnviron,
		5: KindFileOpen,
		6: KindFileRead,
		7: KindFileMmap,
		8: KindCoreDump,
		9: KindFileWrite,
	}
	actionNames = map[uint32]string{
		1: ActionAudit,
		2: ActionDeny,
		3: ActionKill,
	}
)

// Reason returns the Kubernetes Event reason for the event.
func (e Event) Reason() string {
	switch {
	case e.Kind == KindCoreDump:
		return ReasonCoreDumped
	case e.Action == ActionDeny:
		return ReasonAccessDenied
	case e.Action == ActionKill:
		return ReasonProcessKilled
	}
	return ReasonAccessAudited
}

// Message returns a one-line description for people, naming the acting
// process, what it accessed and what the monitor did.
func (e Event) Message() string {
	if e.Kind == KindCoreDump {
		return fmt.Sprintf("process %d (%s) dumped core (wait status %#x); check the node's core_pattern for where the dump went",
			e.Target.PID, e.Target.Comm, e.Target.Detail)
	}

	actor := fmt.Sprintf("process %d (%s) in cgroup %q", e.Actor.PID, e.Actor.Comm, e.Actor.Cgroup)
	var access string
	switch e.Kind {
	case KindPtrace:
		access = fmt.Sprintf("requested ptrace attach-mode access to process %d (%s)", e.Target.PID, e.Target.Comm)
	case KindProcessVM:
		op := "process_vm_readv"
		if e.Target.Detail == 1 {
			op = "process_vm_writev"
		}
		access = fmt.Sprintf("called %s on process %d (%s)", op, e.Target.PID, e.Target.Comm)
	case KindProcMem:
		access = fmt.Sprintf("opened /proc/%d/mem (%s)", e.Target.PID, e.Target.Comm)
	case KindProcEnviron:
		access = fmt.Sprintf("opened /proc/%d/environ (%s)", e.Target.PID, e.Target.Comm)
	case KindFileOpen:
		access = fmt.Sprintf("opened Phantom file %q (inode %d)", e.Target.File, e.Target.Inode)
	case KindFileRead:
		access = fmt.Sprintf("read Phantom file %q (inode %d)", e.Target.File, e.Target.Inode)
	case KindFileMmap:
		access = fmt.Sprintf("mapped Phantom file %q (inode %d)", e.Target.File, e.Target.Inode)
	case KindFileWrite:
		access = fmt.Sprintf("wrote to Phantom file %q (inode %d)", e.Target.File, e.Target.Inode)
	default:
		access = "accessed the pod"
	}

	var outcome string
	switch e.Action {
	case ActionDeny:
		outcome = "denied (enforce mode)"
	case ActionKill:
		outcome = "killed the caller (enforce mode)"
	default:
		outcome = "allowed (audit mode)"
	}
	return fmt.Sprintf("%s from outside the pod %s; %s", actor, access, outcome)
}

// attrs returns the event as structured log attributes.
func (e Event) attrs() []slog.Attr {
	attrs := []slog.Attr{
		slog.String("node", e.Node),
		slog.String("path", string(e.Path)),
		slog.String("kind", e.Kind),
		slog.String("action", e.Action),
		slog.Group("pod",
			slog.String("namespace", e.Pod.Namespace),
			slog.String("name", e.Pod.Name),
			slog.String("uid", e.Pod.UID),
			slog.Uint64("cgroup_id", e.PodCgroup),
		),
		slog.String("container", e.Container),
		slog.Group("actor",
			slog.Uint64("pid", uint64(e.Actor.PID)),
			slog.Uint64("tid", uint64(e.Actor.TID)),
			slog.String("comm", e.Actor.Comm),
			slog.Uint64("cgroup_id", e.Actor.CgroupID),
			slog.String("cgroup", e.Actor.Cgroup),
			slog.String("container", e.Actor.Container),
		),
	}
	target := []any{}
	if e.Target.PID != 0 {
		target = append(target,
			slog.Uint64("pid", uint64(e.Target.PID)),
			slog.String("comm", e.Target.Comm),
			slog.Uint64("cgroup_id", e.Target.CgroupID),
			slog.String("cgroup", e.Target.Cgroup),
		)
	}
	if e.Target.Device != 0 {
		target = append(target,
			slog.Uint64("device", e.Target.Device),
			slog.Uint64("inode", e.Target.Inode),
			slog.String("file", e.Target.File),
		)
	}
	target = append(target, slog.Uint64("detail", uint64(e.Target.Detail)))
	return append(attrs, slog.Group("target", target...))
}

// containerID extracts a container id from the name of a container's cgroup
// directory: "cri-containerd-<id>.scope", "crio-<id>.scope",
// "docker-<id>.scope" (systemd driver) or "<id>" (cgroupfs driver). It
// returns "" when the name does not end in a hexadecimal id of at least 12
// characters.
func containerID(cgroupName string) string {
	name := strings.TrimSuffix(cgroupName, ".scope")
	if i := strings.LastIndexByte(name, '-'); i >= 0 {
		name = name[i+1:]
	}
	if len(name) < 12 {
		return ""
	}
	for _, c := range name {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return ""
		}
	}
	return name
}

// cString converts a NUL-terminated C char array to a string.
func cString(chars []int8) string {
	b := make([]byte, 0, len(chars))
	for _, c := range chars {
		if c == 0 {
			break
		}
		b = append(b, byte(c))
	}
	return string(b)
}
