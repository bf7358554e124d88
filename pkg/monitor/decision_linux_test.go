package monitor

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// Codes of enum phantom_verdict in bpf/phantom.h.
const (
	verdictIgnore = 0
	verdictAllow  = 1
	verdictAudit  = 2
	verdictDeny   = 3
)

// TestDecisionTestRun runs phantom_decide() and the event record of the
// shared header in the kernel through BPF_PROG_TEST_RUN, which works where
// LSM programs cannot be loaded.
func TestDecisionTestRun(t *testing.T) {
	requireRoot(t)

	const (
		daemonTGID   = 4242
		auditPod     = 1001
		enforcePod   = 1002
		unregistered = 9999
		otherCgroup  = 2000
		actorTGID    = 777
		podLevel     = 3
	)
	spec, err := loadDecision()
	if err != nil {
		t.Fatal(err)
	}
	if err := spec.Variables["phantom_daemon_tgid"].Set(uint32(daemonTGID)); err != nil {
		t.Fatal(err)
	}
	var objs decisionObjects
	if err := spec.LoadAndAssign(&objs, nil); err != nil {
		setSuite("testrun", "failed")
		t.Fatalf("load decision test program: %v", err)
	}
	defer objs.Close()
	setSuite("testrun", "ran")
	t.Cleanup(func() {
		if t.Failed() {
			setSuite("testrun", "failed")
		}
	})

	for cgroup, mode := range map[uint64]uint32{auditPod: 0, enforcePod: 1} {
		if err := objs.PhantomPods.Put(cgroup, decisionPhantomPod{Mode: mode, Level: podLevel}); err != nil {
			t.Fatal(err)
		}
	}
	rd, err := ringbuf.NewReader(objs.PhantomEvents)
	if err != nil {
		t.Fatal(err)
	}
	defer rd.Close()

	tests := []struct {
		name        string
		actorTGID   uint64
		actorPod    uint64
		targetPod   uint64
		attach      uint64
		wantVerdict uint32
		wantAction  uint32 // 0: no event
	}{
		{name: "same pod allowed", actorTGID: actorTGID, actorPod: enforcePod, targetPod: enforcePod, attach: 1, wantVerdict: verdictAllow},
		{name: "daemon allowed", actorTGID: daemonTGID, actorPod: 0, targetPod: enforcePod, attach: 1, wantVerdict: verdictAllow},
		{name: "other cgroup audit records", actorTGID: actorTGID, actorPod: otherCgroup, targetPod: auditPod, attach: 1, wantVerdict: verdictAudit, wantAction: 1},
		{name: "other cgroup enforce denies", actorTGID: actorTGID, actorPod: otherCgroup, targetPod: enforcePod, attach: 1, wantVerdict: verdictDeny, wantAction: 2},
		{name: "actor above pod level denied", actorTGID: actorTGID, actorPod: 0, targetPod: enforcePod, attach: 1, wantVerdict: verdictDeny, wantAction: 2},
		{name: "other pod audit-mode target", actorTGID: actorTGID, actorPod: enforcePod, targetPod: auditPod, attach: 1, wantVerdict: verdictAudit, wantAction: 1},
		{name: "unregistered target ignored", actorTGID: actorTGID, actorPod: otherCgroup, targetPod: unregistered, attach: 1, wantVerdict: verdictIgnore},
		{name: "read mode ignored", actorTGID: actorTGID, actorPod: otherCgroup, targetPod: enforcePod, attach: 0, wantVerdict: verdictIgnore},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			const kind = 5 // PHANTOM_KIND_FILE_OPEN
			ret, err := objs.PhantomDecisionTest.Run(&ebpf.RunOptions{
				Context: []uint64{tt.actorTGID, tt.actorPod, tt.targetPod, tt.attach, kind},
			})
			if err != nil {
				t.Fatalf("BPF_PROG_TEST_RUN: %v", err)
			}
			if ret != tt.wantVerdict {
				t.Errorf("verdict = %d, want %d", ret, tt.wantVerdict)
			}

			rec, ok := readTestEvent(t, rd)
			if tt.wantAction == 0 {
				if ok {
					t.Errorf("event recorded for an allowed or ignored access: %+v", rec)
				}
				return
			}
			if !ok {
				t.Fatal("no event recorded")
			}
			got := struct{ PodCgroup, ActorPID, Kind, Action uint64 }{rec.PodCgroup, uint64(rec.ActorPid), uint64(rec.Kind), uint64(rec.Action)}
			want := struct{ PodCgroup, ActorPID, Kind, Action uint64 }{tt.targetPod, uint64(os.Getpid()), kind, uint64(tt.wantAction)}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("event (-want +got):\n%s", diff)
			}
		})
	}
}

// readTestEvent returns the next event, or false when none arrives soon.
// BPF_PROG_TEST_RUN runs synchronously, so an event is already in the ring.
func readTestEvent(t *testing.T, rd *ringbuf.Reader) (lsmPhantomEvent, bool) {
	t.Helper()
	var ev lsmPhantomEvent
	rd.SetDeadline(time.Now().Add(50 * time.Millisecond))
	rec, err := rd.Read()
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return ev, false
	}
	if err != nil {
		t.Fatalf("read ring buffer: %v", err)
	}
	if err := binary.Read(bytes.NewReader(rec.RawSample), binary.NativeEndian, &ev); err != nil {
		t.Fatalf("decode event: %v", err)
	}
	return ev, true
}

// TestLSMHookBodiesPassVerifier loads the LSM hook bodies as BTF tracepoint
// programs, which take the same trusted pointers, so the verifier checks
// them on kernels that refuse BPF LSM programs. It does not attach them.
func TestLSMHookBodiesPassVerifier(t *testing.T) {
	requireRoot(t)
	spec, err := loadLsmVerify()
	if err != nil {
		t.Fatal(err)
	}
	if err := spec.Variables["phantom_daemon_tgid"].Set(uint32(os.Getpid())); err != nil {
		t.Fatal(err)
	}
	var objs lsmVerifyObjects
	err = spec.LoadAndAssign(&objs, nil)
	if errors.Is(err, unix.EPERM) {
		setSuite("lsm-verifier", "skipped (EPERM)")
		t.Skipf("kernel refuses BTF tracepoint programs: %v", err)
	}
	if err != nil {
		setSuite("lsm-verifier", "failed")
		t.Fatalf("verifier rejected the LSM hook bodies: %+20v", err)
	}
	defer objs.Close()
	setSuite("lsm-verifier", "ran")
}
