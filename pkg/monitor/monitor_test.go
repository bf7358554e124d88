package monitor

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		name    string
		cfg     Config
		wantErr string
	}{
		{name: "zero value", cfg: Config{}},
		{name: "lsm forced", cfg: Config{ForcePath: PathLSM}},
		{name: "tracepoint forced", cfg: Config{ForcePath: PathTracepoint}},
		{name: "unknown path", cfg: Config{ForcePath: "kprobe"}, wantErr: `invalid ForcePath "kprobe"`},
		{name: "disabled is not a choice", cfg: Config{ForcePath: PathDisabled}, wantErr: `invalid ForcePath "disabled"`},
		{name: "negative interval", cfg: Config{EventInterval: -time.Second}, wantErr: "invalid EventInterval -1s"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.cfg.validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("validate() = %v, want nil", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("validate() = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestPodValidate(t *testing.T) {
	valid := Pod{Namespace: "ns", Name: "app", UID: "uid-1", CgroupID: 42, CgroupLevel: 3, Mode: ModeEnforce}
	tests := []struct {
		name    string
		mutate  func(*Pod)
		wantErr string
	}{
		{name: "valid", mutate: func(*Pod) {}},
		{name: "empty mode means audit", mutate: func(p *Pod) { p.Mode = "" }},
		{name: "missing uid", mutate: func(p *Pod) { p.UID = "" }, wantErr: "UID is empty"},
		{name: "missing cgroup id", mutate: func(p *Pod) { p.CgroupID = 0 }, wantErr: "CgroupID is 0"},
		{name: "root level", mutate: func(p *Pod) { p.CgroupLevel = 0 }, wantErr: "CgroupLevel 0 is outside 1..15"},
		{name: "too deep", mutate: func(p *Pod) { p.CgroupLevel = 16 }, wantErr: "CgroupLevel 16 is outside 1..15"},
		{name: "unknown mode", mutate: func(p *Pod) { p.Mode = "block" }, wantErr: `mode "block" is unknown`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := valid
			tt.mutate(&p)
			err := p.validate()
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("validate() = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidPod) {
				t.Errorf("validate() = %v, want ErrInvalidPod", err)
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("validate() = %v, want error containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestContainerID(t *testing.T) {
	id := strings.Repeat("0123456789abcdef", 4)
	tests := map[string]string{
		"cri-containerd-" + id + ".scope":  id,
		"crio-" + id + ".scope":            id,
		"docker-" + id + ".scope":          id,
		id:                                 id,
		"attacker":                         "",
		"kubepods-burstable-pod1234.slice": "",
		"cri-containerd-abc.scope":         "",
		"":                                 "",
	}
	for name, want := range tests {
		if got := containerID(name); got != want {
			t.Errorf("containerID(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestCString(t *testing.T) {
	chars := []int8{'c', 'a', 't', 0, 'x', 'y'}
	if got := cString(chars); got != "cat" {
		t.Errorf("cString = %q, want %q", got, "cat")
	}
	full := []int8{'a', 'b'}
	if got := cString(full); got != "ab" {
		t.Errorf("cString without NUL = %q, want %q", got, "ab")
	}
}

func TestEventReasonAndMessage(t *testing.T) {
	actor := Process{PID: 10, Comm: "gdb", Cgroup: "other"}
	victim := Target{PID: 20, Comm: "app"}
	file := Target{File: "password", Inode: 7, Device: 40}
	tests := []struct {
		name        string
		event       Event
		wantReason  string
		wantMessage string
	}{
		{
			name:        "ptrace killed",
			event:       Event{Kind: KindPtrace, Action: ActionKill, Actor: actor, Target: victim},
			wantReason:  ReasonProcessKilled,
			wantMessage: `process 10 (gdb) in cgroup "other" from outside the pod requested ptrace attach-mode access to process 20 (app); killed the caller (enforce mode)`,
		},
		{
			name:        "process_vm_writev denied",
			event:       Event{Kind: KindProcessVM, Action: ActionDeny, Actor: actor, Target: Target{PID: 20, Comm: "app", Detail: 1}},
			wantReason:  ReasonAccessDenied,
			wantMessage: `process 10 (gdb) in cgroup "other" from outside the pod called process_vm_writev on process 20 (app); denied (enforce mode)`,
		},
		{
			name:        "environ audited",
			event:       Event{Kind: KindProcEnviron, Action: ActionAudit, Actor: actor, Target: victim},
			wantReason:  ReasonAccessAudited,
			wantMessage: `process 10 (gdb) in cgroup "other" from outside the pod opened /proc/20/environ (app); allowed (audit mode)`,
		},
		{
			name:        "file read audited",
			event:       Event{Kind: KindFileRead, Action: ActionAudit, Actor: actor, Target: file},
			wantReason:  ReasonAccessAudited,
			wantMessage: `process 10 (gdb) in cgroup "other" from outside the pod read Phantom file "password" (inode 7); allowed (audit mode)`,
		},
		{
			name:        "core dump",
			event:       Event{Kind: KindCoreDump, Action: ActionAudit, Actor: Process{PID: 20, Comm: "app"}, Target: Target{PID: 20, Comm: "app", Detail: 0x86}},
			wantReason:  ReasonCoreDumped,
			wantMessage: `process 20 (app) dumped core (wait status 0x86); check the node's core_pattern for where the dump went`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.event.Reason(); got != tt.wantReason {
				t.Errorf("Reason() = %q, want %q", got, tt.wantReason)
			}
			if diff := cmp.Diff(tt.wantMessage, tt.event.Message()); diff != "" {
				t.Errorf("Message() (-want +got):\n%s", diff)
			}
		})
	}
}

func TestKindAndActionNamesCoverEnums(t *testing.T) {
	wantKinds := []string{KindPtrace, KindProcessVM, KindProcMem, KindProcEnviron, KindFileOpen, KindFileRead, KindFileMmap, KindCoreDump, KindFileWrite}
	for i, want := range wantKinds {
		if got := kindNames[uint32(i+1)]; got != want {
			t.Errorf("kindNames[%d] = %q, want %q", i+1, got, want)
		}
	}
	wantActions := []string{ActionAudit, ActionDeny, ActionKill}
	for i, want := range wantActions {
		if got := actionNames[uint32(i+1)]; got != want {
			t.Errorf("actionNames[%d] = %q, want %q", i+1, got, want)
		}
	}
}
