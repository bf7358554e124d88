package driver

import (
	"context"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/phantom-sec/phantom/pkg/baotest"
	"github.com/phantom-sec/phantom/pkg/circuit"
	"github.com/phantom-sec/phantom/pkg/spec"
)

const twoSecrets = "- path: payments/db\n  field: password\n- path: payments/api-key\n  field: key"

// TestFiftyVolumesOneLogin publishes 50 volumes of one service account at
// once: one login and one read per secret reach OpenBao.
func TestFiftyVolumesOneLogin(t *testing.T) {
	h := newHarness(t)
	h.writeKV("payments/api-key", map[string]any{"key": "k-1"})
	h.bao.ResetCounts()

	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for range 50 {
		req := h.request(newPod("payments", "api"), twoSecrets)
		wg.Go(func() { errs <- h.publish(req) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		must(t, err)
	}

	if n := h.bao.Count(baotest.OpLogin); n != 1 {
		t.Errorf("logins = %d, want 1 for 50 pods of one service account", n)
	}
	if n := h.bao.Count(baotest.OpKVRead); n != 2 {
		t.Errorf("KV reads = %d, want 2: one per secret", n)
	}
	if n := mountsUnder(t, h.root); n != 50 {
		t.Errorf("mounts = %d, want 50", n)
	}
}

// TestOutageServesKnownIdentityFromCache takes OpenBao down: running
// volumes keep their files, a new pod of a known identity starts from the
// cache, an unknown identity and a forged token get Unavailable, and
// everything recovers without a restart when OpenBao returns.
func TestOutageServesKnownIdentityFromCache(t *testing.T) {
	h := newHarness(t)
	running := newPod("payments", "api")
	runningReq := h.request(running, paymentsSecrets)
	must(t, h.publish(runningReq))

	h.bao.SetDown(true)

	// A new pod of the same service account starts from the hot tier.
	fresh := h.request(newPod("payments", "api"), paymentsSecrets)
	must(t, h.publish(fresh))
	if got := readFile(t, filepath.Join(fresh.TargetPath, "db-password")); got != "s3cret-one" {
		t.Errorf("new pod during outage: db-password = %q, want the cached s3cret-one", got)
	}
	if got := (h.metric("phantom_cache_hits_total", "tier", "hot")); got < 1 {
		t.Errorf("hot cache hits = %v, want at least 1", got)
	}

	// A service account never seen on this node gets Unavailable and a message.
	unknown := h.request(newPod("billing", "worker"), "- path: billing/db\n  field: password")
	err := h.publish(unknown)
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("unknown identity during outage = %v, want Unavailable", err)
	}
	t.Logf("message: %s", status.Convert(err).Message())
	for _, want := range []string{"OpenBao at " + h.bao.URL(), "unavailable since", "billing/worker", "secret/billing/db", "check OpenBao"} {
		if !strings.Contains(status.Convert(err).Message(), want) {
			t.Errorf("message %q does not contain %q", status.Convert(err).Message(), want)
		}
	}
	if n := mountCount(t, unknown.TargetPath); n != 0 {
		t.Errorf("failed publish left %d mounts", n)
	}

	// A token of the right claims signed by another key gets nothing.
	forged := h.request(newPod("payments", "api"), paymentsSecrets)
	forged.VolumeContext[spec.KubeletTokens] = tokensJSON(testAudience, h.forgedToken(t, forged))
	if err := h.publish(forged); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "could not be verified offline") {
		t.Errorf("forged token during outage = %v, want Unavailable naming the failed verification", err)
	}

	// OpenBao returns: new identities work again without a restart.
	h.bao.SetDown(false)
	waitClosed(t, h.breaker)
	must(t, h.publish(h.request(newPod("billing", "worker"), "- path: billing/db\n  field: password")))
}

// TestOutageSealedTierAfterRestart restarts the driver (same state
// directory and keyring key) and starts a new pod from the sealed tier.
func TestOutageSealedTierAfterRestart(t *testing.T) {
	h := newHarness(t)
	running := newPod("payments", "api")
	runningReq := h.request(running, paymentsSecrets)
	must(t, h.publish(runningReq))

	h.restart()
	h.bao.SetDown(true)

	fresh := h.request(newPod("payments", "api"), paymentsSecrets)
	must(t, h.publish(fresh))
	if got := readFile(t, filepath.Join(fresh.TargetPath, "db", "username")); got != "app" {
		t.Errorf("new pod after restart during outage: db/username = %q, want app", got)
	}
	if got := h.metric("phantom_cache_hits_total", "tier", "sealed"); got < 1 {
		t.Errorf("sealed cache hits = %v, want at least 1", got)
	}
	if got := testutil.ToFloat64(h.driver.metrics.recovered); got != 1 {
		t.Errorf("volumes recovered = %v, want 1", got)
	}
	if n := mountCount(t, runningReq.TargetPath); n != 1 {
		t.Errorf("mounts at the running volume after restart = %d, want 1", n)
	}
}

// TestOutageGracePeriod serves copies past their expiry within the grace
// period, and nothing after it.
func TestOutageGracePeriod(t *testing.T) {
	h := newHarness(t)
	must(t, h.publish(h.request(newPod("payments", "api"), paymentsSecrets)))
	h.bao.SetDown(true)

	h.clock.Advance(DefaultRefreshInterval + 30*time.Minute)
	within := h.request(newPod("payments", "api"), paymentsSecrets)
	must(t, h.publish(within))
	if got := testutil.ToFloat64(h.driver.metrics.graceServed); got != 1 {
		t.Errorf("phantom_cache_grace_served_total = %v, want 1", got)
	}
	if got := h.metric("phantom_cache_hits_total", "tier", "grace"); got < 1 {
		t.Errorf("grace cache hits = %v, want at least 1", got)
	}

	h.clock.Advance(time.Hour)
	past := h.request(newPod("payments", "api"), paymentsSecrets)
	if err := h.publish(past); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "grace period of 1h0m0s") {
		t.Errorf("publish past the grace period = %v, want Unavailable naming the grace period", err)
	}
}

// TestWaitingPublishSucceedsWhenOpenBaoReturns starts a publish with
// nothing cached during an outage; it waits and succeeds within 5 s of
// OpenBao's return.
func TestWaitingPublishSucceedsWhenOpenBaoReturns(t *testing.T) {
	h := newHarness(t)
	h.stop()
	h.tune = func(cfg *Config) { cfg.OutageWait = 15 * time.Second }
	h.start(h.maxBytes)
	h.bao.SetDown(true)

	req := h.request(newPod("billing", "worker"), "- path: billing/db\n  field: password")
	result := make(chan error, 1)
	go func() { result <- h.publish(req) }()
	time.Sleep(time.Second)
	select {
	case err := <-result:
		t.Fatalf("publish returned %v during the outage, want it to wait", err)
	default:
	}

	h.bao.SetDown(false)
	back := time.Now()
	select {
	case err := <-result:
		must(t, err)
		if took := time.Since(back); took > 5*time.Second {
			t.Errorf("publish succeeded %v after OpenBao returned, want within 5s", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("publish still waiting 10s after OpenBao returned")
	}
}

// TestOutageBoundsOpenBaoRequests runs 20 volumes of 20 service accounts
// (no sharing: the worst case) with a refresh due in every round while
// OpenBao is sealed, with the production breaker, and counts what reaches
// OpenBao. Each round is a minute of kubelet republishes.
func TestOutageBoundsOpenBaoRequests(t *testing.T) {
	h := newHarness(t)
	h.stop()
	h.productionBreaker = true
	h.start(h.maxBytes)

	type volumeReq struct {
		p   pod
		req *csi.NodePublishVolumeRequest
	}
	var volumes []volumeReq
	for i := range 20 {
		p := newPod("payments", saName(i))
		req := h.request(p, "- path: payments/db\n  field: password")
		req.VolumeContext[spec.AttrRole] = "payments-api"
		must(t, h.publish(req))
		volumes = append(volumes, volumeReq{p, req})
	}

	h.bao.Seal()
	defer h.bao.Unseal()
	h.bao.ResetCounts()
	for round := range 3 {
		h.clock.Advance(DefaultRefreshInterval)
		before := totalRequests(h.bao)
		for _, v := range volumes {
			must(t, h.publish(h.republishRequest(v.req, v.p)))
		}
		n := totalRequests(h.bao) - before
		t.Logf("round %d: %d requests reached OpenBao", round, n)
		if n > 6 {
			t.Errorf("round %d: %d requests reached OpenBao, want at most 6", round, n)
		}
	}
	if got := h.breaker.State(); got != circuit.Open && got != circuit.HalfOpen {
		t.Errorf("breaker state = %v during the outage, want open", got)
	}
}

func saName(i int) string { return "sa-" + strconv.Itoa(i) }

// totalRequests sums the server's request counters.
func totalRequests(server *baotest.Server) int {
	n := 0
	for _, op := range []baotest.Op{baotest.OpLogin, baotest.OpKVRead, baotest.OpKVList, baotest.OpDynamicRead,
		baotest.OpLeaseRenew, baotest.OpLeaseRevoke, baotest.OpTokenRenew, baotest.OpTokenLookup, baotest.OpHealth, baotest.OpOther} {
		n += server.Count(op)
	}
	return n
}

// waitClosed waits until the breaker has closed after OpenBao returned.
func waitClosed(t *testing.T, b *circuit.Breaker) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := b.Wait(ctx); err != nil {
		t.Fatalf("breaker still open 10s after OpenBao returned: %v", err)
	}
}

// TestSharedSecretRotationReads republishes 20 pods that share one secret
// every minute, with a refresh interval of one minute: one read per minute
// reaches OpenBao for the node.
func TestSharedSecretRotationReads(t *testing.T) {
	h := newHarness(t)
	type volumeReq struct {
		p   pod
		req *csi.NodePublishVolumeRequest
	}
	var volumes []volumeReq
	for range 20 {
		p := newPod("payments", "api")
		req := h.request(p, "- path: payments/db\n  field: password")
		req.VolumeContext[spec.AttrRefreshInterval] = "1m"
		must(t, h.publish(req))
		volumes = append(volumes, volumeReq{p, req})
		h.clock.Advance(time.Second) // pods start spread out
	}
	h.bao.ResetCounts()

	const minutes = 5
	for range minutes {
		h.clock.Advance(time.Minute)
		h.runDue()
		for _, v := range volumes {
			must(t, h.publish(h.republishRequest(v.req, v.p)))
		}
	}

	if n := h.bao.Count(baotest.OpKVRead); n > 2*minutes {
		t.Errorf("KV reads over %d minutes = %d, want at most 2 per minute", minutes, n)
	}
	t.Logf("KV reads over %d minutes for 20 pods sharing one secret: %d", minutes, h.bao.Count(baotest.OpKVRead))
}
