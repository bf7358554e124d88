package driver

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/phantom-sec/phantom/pkg/baotest"
	"github.com/phantom-sec/phantom/pkg/state"
)

const dbSecrets = "- path: database/creds/payments\n  type: dynamic\n  format: json\n  file: db.json"

// enableDatabase mounts a database engine whose role issues leases of two
// minutes, renewable up to six.
func (h *harness) enableDatabase() {
	h.t.Helper()
	ctx := context.Background()
	must(h.t, baotest.EnableDatabase(ctx, h.admin, "database", baotest.DatabaseConnection{}))
	must(h.t, baotest.WriteDatabaseRole(ctx, h.admin, "database", "payments", baotest.DatabaseRole{DefaultTTL: 2 * time.Minute, MaxTTL: 6 * time.Minute}))
}

// runDue runs the background work that is due on the harness clock.
func (h *harness) runDue() {
	h.driver.scheduler.runDue(context.Background(), h.driver.background)
}

// leaseOf returns the only lease of a volume.
func (h *harness) leaseOf(volumeID string) state.Lease {
	h.t.Helper()
	unlock := h.driver.volumes.lock(volumeID)
	defer unlock()
	vol, ok := h.driver.volumes.get(volumeID)
	if !ok || len(vol.leases) != 1 {
		h.t.Fatalf("volume %s: found %v with leases %v, want one lease", volumeID, ok, vol)
	}
	return vol.leases[0].Lease
}

func TestLeaseRenewedAtTwoThirdsOfTTL(t *testing.T) {
	h := newHarness(t)
	h.enableDatabase()
	req := h.request(newPod("payments", "api"), dbSecrets)
	must(t, h.publish(req))
	lease := h.leaseOf(req.VolumeId)
	h.bao.ResetCounts()

	h.clock.Advance(79 * time.Second) // two thirds of 120 s is 80 s
	h.runDue()
	if n := h.bao.Count(baotest.OpLeaseRenew); n != 0 {
		t.Errorf("renewals at 79s = %d, want 0", n)
	}

	h.clock.Advance(2 * time.Second)
	h.runDue()
	if n := h.bao.Count(baotest.OpLeaseRenew); n != 1 {
		t.Fatalf("renewals at 81s = %d, want 1", n)
	}
	info, ok := h.bao.Lease(lease.ID)
	if !ok || info.Revoked || !info.LastRenewal.Equal(h.clock.Now()) {
		t.Errorf("lease at the server = %+v (found %v), want renewed now", info, ok)
	}
	if got := h.metric("phantom_lease_renewals_total", "result", "ok"); got != 1 {
		t.Errorf("phantom_lease_renewals_total{result=ok} = %v, want 1", got)
	}
	if got := h.metric("phantom_leases_held"); got != 1 {
		t.Errorf("phantom_leases_held = %v, want 1", got)
	}
	if n := h.bao.Count(baotest.OpDynamicRead); n != 0 {
		t.Errorf("new credentials issued = %d, want 0: renewing keeps them", n)
	}
}

// TestLeaseReissuedNearMaxTTL walks a lease to its max TTL: it is renewed
// until OpenBao caps a renewal, then replaced by new credentials, which
// are swapped into the files before the old lease is revoked.
func TestLeaseReissuedNearMaxTTL(t *testing.T) {
	h := newHarness(t)
	h.enableDatabase()
	p := newPod("payments", "api")
	req := h.request(p, dbSecrets)
	must(t, h.publish(req))
	first := h.leaseOf(req.VolumeId)
	before := readFile(t, filepath.Join(req.TargetPath, "db.json"))
	h.bao.ResetCounts()

	for range 40 { // 400 s in steps of 10 s
		h.clock.Advance(10 * time.Second)
		h.runDue()
	}

	if n := h.bao.Count(baotest.OpDynamicRead); n != 1 {
		t.Fatalf("new credentials issued = %d, want 1 near max_ttl", n)
	}
	if n := h.bao.Count(baotest.OpLeaseRenew); n < 3 {
		t.Errorf("renewals = %d, want at least 3 before max_ttl", n)
	}
	if !h.bao.Revoked(first.ID) {
		t.Error("the first lease is not revoked after its replacement")
	}
	second := h.leaseOf(req.VolumeId)
	if second.ID == first.ID {
		t.Fatal("the volume still holds the first lease")
	}
	if info, ok := h.bao.Lease(second.ID); !ok || info.Revoked {
		t.Errorf("the new lease = %+v (found %v), want active", info, ok)
	}
	after := readFile(t, filepath.Join(req.TargetPath, "db.json"))
	if after == before || !strings.Contains(after, `"username"`) {
		t.Errorf("db.json was not replaced by new credentials: before %d bytes, after %d bytes", len(before), len(after))
	}
	if got := h.metric("phantom_rotations_total", "reason", reasonMaxTTL); got != 1 {
		t.Errorf("phantom_rotations_total{reason=lease_max_ttl} = %v, want 1", got)
	}
	if got := h.metric("phantom_lease_renewals_total", "result", "capped"); got != 1 {
		t.Errorf("phantom_lease_renewals_total{result=capped} = %v, want 1", got)
	}

	must(t, h.unpublish(req))
	if n := h.bao.LeaseCount(); n != 0 {
		t.Errorf("active leases after unpublish = %d, want 0", n)
	}
}

// TestRepublishDoesNotReissueDynamicSecrets republishes every minute for
// five minutes, with the background loop running in between: the
// credentials stay, renewed, not issued again.
func TestRepublishDoesNotReissueDynamicSecrets(t *testing.T) {
	h := newHarness(t)
	h.enableDatabase()
	p := newPod("payments", "api")
	req := h.request(p, dbSecrets)
	must(t, h.publish(req))
	before := readFile(t, filepath.Join(req.TargetPath, "db.json"))
	h.bao.ResetCounts()

	for range 5 {
		for range 4 {
			h.clock.Advance(15 * time.Second)
			h.runDue()
		}
		must(t, h.publish(h.republishRequest(req, p)))
	}

	if n := h.bao.Count(baotest.OpDynamicRead); n != 0 {
		t.Errorf("credentials issued by republishes = %d, want 0", n)
	}
	if n := h.bao.Count(baotest.OpLeaseRenew); n < 2 {
		t.Errorf("renewals over 5 minutes of a 2-minute lease = %d, want at least 2", n)
	}
	if got := readFile(t, filepath.Join(req.TargetPath, "db.json")); got != before {
		t.Error("db.json changed without a rotation")
	}
}

// TestTwoChangesOneUpdate writes a secret twice within a second: the next
// refresh swaps in the latest value once, and later refreshes rewrite
// nothing.
func TestTwoChangesOneUpdate(t *testing.T) {
	h := newHarness(t)
	p := newPod("payments", "api")
	req := h.request(p, paymentsSecrets)
	must(t, h.publish(req))
	link := filepath.Join(req.TargetPath, "..data")
	first, err := os.Readlink(link)
	must(t, err)

	h.writeKV("payments/db", map[string]any{"username": "app", "password": "second"})
	h.writeKV("payments/db", map[string]any{"username": "app", "password": "third"})
	h.clock.Advance(DefaultRefreshInterval)
	must(t, h.publish(h.republishRequest(req, p)))
	second, err := os.Readlink(link)
	must(t, err)
	h.clock.Advance(DefaultRefreshInterval)
	must(t, h.publish(h.republishRequest(req, p)))
	third, err := os.Readlink(link)
	must(t, err)

	if got := readFile(t, filepath.Join(req.TargetPath, "db-password")); got != "third" {
		t.Errorf("db-password = %q, want the latest value", got)
	}
	if first == second {
		t.Error("content was not swapped after the change")
	}
	if second != third {
		t.Error("content was swapped again without a change")
	}
	if got := h.metric("phantom_rotations_total", "reason", reasonKVChanged); got != 1 {
		t.Errorf("phantom_rotations_total{reason=kv_changed} = %v, want 1", got)
	}
}

// TestRestartResumesLeases restarts the driver in-process: it recovers the
// volume and its credentials from the index and the sealed cache, renews
// the lease once a republish brings a token, and revokes it on unpublish.
func TestRestartResumesLeases(t *testing.T) {
	h := newHarness(t)
	h.enableDatabase()
	p := newPod("payments", "api")
	req := h.request(p, dbSecrets+"\n- path: payments/db\n  field: password")
	must(t, h.publish(req))
	lease := h.leaseOf(req.VolumeId)

	// A record of a volume whose pod is gone is dropped at restart.
	index, err := state.Open(filepath.Join(h.stateDir, "volumes"))
	must(t, err)
	must(t, index.Put(&state.Record{VolumeID: "gone", Target: filepath.Join(h.root, "gone", "mount"), Namespace: "payments", ServiceAccount: "api"}))

	h.restart()
	h.bao.ResetCounts()

	if got := h.metric("phantom_volumes_recovered_total"); got != 1 {
		t.Errorf("phantom_volumes_recovered_total = %v, want 1", got)
	}
	records, err := index.List()
	must(t, err)
	if len(records) != 1 || records[0].VolumeID != req.VolumeId {
		t.Errorf("index after restart holds %d records, want only the live volume", len(records))
	}
	if got := h.leaseOf(req.VolumeId); got.ID != lease.ID {
		t.Errorf("recovered lease = %s, want %s", got.ID, lease.ID)
	}

	// No session survives a restart: background work waits for a republish.
	h.clock.Advance(81 * time.Second)
	h.runDue()
	must(t, h.publish(h.republishRequest(req, p)))
	if n := h.bao.Count(baotest.OpLeaseRenew); n != 1 {
		t.Errorf("renewals after the first republish = %d, want 1", n)
	}
	if n := h.bao.Count(baotest.OpDynamicRead); n != 0 {
		t.Errorf("credentials issued after restart = %d, want 0: the sealed cache kept them", n)
	}
	if n := mountCount(t, req.TargetPath); n != 1 {
		t.Errorf("mounts at target = %d, want 1", n)
	}

	must(t, h.unpublish(req))
	if !h.bao.Revoked(lease.ID) {
		t.Error("lease not revoked on unpublish after restart")
	}
}

// TestRefreshDueWhileTimePasses checks that a KV refresh reads OpenBao as
// soon as it is due, also when the first publish took time, as it does on
// a real clock. The copy cached by a read must be stale when the volume's
// next refresh is due.
func TestRefreshDueWhileTimePasses(t *testing.T) {
	h := newHarness(t)
	h.stop()
	var ticking atomic.Bool
	h.tune = func(cfg *Config) {
		cfg.Now = func() time.Time {
			if ticking.Load() {
				h.clock.Advance(time.Second) // each reading of the clock takes a second
			}
			return h.clock.Now()
		}
	}
	h.start(h.maxBytes)
	p := newPod("payments", "api")
	req := h.request(p, paymentsSecrets)

	ticking.Store(true)
	must(t, h.publish(req))
	ticking.Store(false)

	vol, ok := h.driver.volumes.get(req.VolumeId)
	if !ok {
		t.Fatal("volume not recorded")
	}
	h.writeKV("payments/db", map[string]any{"username": "app", "password": "rotated"})
	h.clock.Set(vol.refreshedAt.Add(vol.refresh)) // exactly when the refresh is due
	must(t, h.publish(h.republishRequest(req, p)))

	if got := readFile(t, filepath.Join(req.TargetPath, "db-password")); got != "rotated" {
		t.Errorf("db-password = %q once the refresh was due, want the rotated value", got)
	}
}
