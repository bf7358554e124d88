package driver

import (
	"context"
	"errors"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/phantom-sec/phantom/pkg/satoken"
)

// recordingProtector records calls; it fails the first Protect when
// failFirst is set, as when the pod's cgroup does not exist yet.
type recordingProtector struct {
	mu        sync.Mutex
	calls     []string
	failFirst bool
}

func (p *recordingProtector) Protect(_ context.Context, pod satoken.Pod, volumeID, target string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.failFirst {
		p.failFirst = false
		p.calls = append(p.calls, "failed")
		return errors.New("pod cgroup not found")
	}
	p.calls = append(p.calls, "protect "+pod.Namespace+"/"+pod.Name+" "+volumeID)
	return nil
}

func (p *recordingProtector) Unprotect(volumeID string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.calls = append(p.calls, "unprotect "+volumeID)
	return nil
}

func TestPublishRegistersProtection(t *testing.T) {
	h := newHarness(t)
	protector := &recordingProtector{failFirst: true}
	cfg := h.config()
	cfg.Protector = protector
	h.startWith(cfg)
	p := newPod("payments", "api")
	req := h.request(p, paymentsSecrets)

	must(t, h.publish(req)) // protection fails: publish still succeeds
	must(t, h.publish(req)) // republish retries it
	must(t, h.publish(req)) // already protected
	must(t, h.unpublish(req))

	want := []string{"failed", "protect payments/" + p.name + " " + req.VolumeId, "unprotect " + req.VolumeId}
	if diff := cmp.Diff(want, protector.calls); diff != "" {
		t.Errorf("protector calls (-want +got):\n%s", diff)
	}
}
