package contract

import (
	"context"
	"errors"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/phantom-sec/phantom/pkg/baotest"
)

func TestHealth(t *testing.T) {
	t.Parallel()
	t.Logf("target: %s", tg.name)
	health, err := client(t, "").Sys().HealthWithContext(context.Background())
	if err != nil {
		t.Fatalf("health: %v", err)
	}
	if !health.Initialized || health.Sealed || health.Standby {
		t.Errorf("health = %+v, want initialized, unsealed, active", health)
	}
	if health.Version == "" || health.ClusterID == "" {
		t.Errorf("health lacks version or cluster_id: %+v", health)
	}

	c := client(t, "")
	r := c.NewRequest(http.MethodGet, "/v1/sys/health")
	//nolint:staticcheck // RawRequestWithContext returns the status code.
	resp, err := c.RawRequestWithContext(context.Background(), r)
	if err != nil {
		t.Fatalf("raw health: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("health status = %d, want 200", resp.StatusCode)
	}
}

// The cases below need fault injection or the test clock. They run one
// after another because they change the shared server.

func TestSealed(t *testing.T) {
	srv := requireTestServer(t, "sealing a real OpenBao needs its unseal keys")
	ctx := context.Background()
	tenant := login(t, payments)
	srv.Seal()
	defer srv.Unseal()

	_, err := tenant.Logical().ReadWithContext(ctx, fx.kvMount+"/data/payments/db")
	wantResponseError(t, err, http.StatusServiceUnavailable, "Vault is sealed")

	_, err = client(t, "").Logical().WriteWithContext(ctx, "auth/"+fx.jwtMount+"/login",
		map[string]any{"role": "payments", "jwt": jwtFor(t, payments.pod)})
	wantResponseError(t, err, http.StatusServiceUnavailable, "Vault is sealed")

	health, err := client(t, "").Sys().HealthWithContext(ctx)
	if err != nil {
		t.Fatalf("health while sealed: %v", err)
	}
	if !health.Sealed || !health.Standby {
		t.Errorf("health = %+v, want sealed and standby", health)
	}
	status, err := client(t, "").Sys().SealStatusWithContext(ctx)
	if err != nil || !status.Sealed {
		t.Errorf("seal-status = (%+v, %v), want sealed", status, err)
	}

	srv.Unseal()
	if _, err := tenant.Logical().ReadWithContext(ctx, fx.kvMount+"/data/payments/db"); err != nil {
		t.Errorf("read after unseal: %v", err)
	}
}

func TestInjectedFailures(t *testing.T) {
	srv := requireTestServer(t, "fault injection")
	ctx := context.Background()
	tenant := login(t, payments)

	for _, status := range []int{500, 502, 503, 429} {
		srv.FailNext(1, status)
		_, err := tenant.Logical().ReadWithContext(ctx, fx.kvMount+"/data/payments/db")
		respErr := responseError(t, err)
		if respErr.StatusCode != status || len(respErr.Errors) != 1 {
			t.Errorf("injected %d: got status %d, errors %q", status, respErr.StatusCode, respErr.Errors)
		}
		if _, err := tenant.Logical().ReadWithContext(ctx, fx.kvMount+"/data/payments/db"); err != nil {
			t.Errorf("request after the injected %d: %v", status, err)
		}
	}

	// Root-token (provisioning) requests are never failed.
	srv.FailNext(1, 500)
	defer srv.FailNext(0, 0)
	if _, err := rootClient(t).Logical().ReadWithContext(ctx, fx.kvMount+"/data/payments/db"); err != nil {
		t.Errorf("root request with a pending failure: %v", err)
	}
}

func TestServerDown(t *testing.T) {
	srv := requireTestServer(t, "fault injection")
	ctx := context.Background()
	tenant := login(t, payments)

	srv.SetDown(true)
	_, err := tenant.Logical().ReadWithContext(ctx, fx.kvMount+"/data/payments/db")
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("read while down: %v, want connection refused", err)
	}

	srv.SetDown(false)
	if _, err := tenant.Logical().ReadWithContext(ctx, fx.kvMount+"/data/payments/db"); err != nil {
		t.Errorf("read after coming back on the same port: %v", err)
	}
}

func TestLatency(t *testing.T) {
	srv := requireTestServer(t, "fault injection")
	tenant := login(t, payments)
	srv.SetLatency(300 * time.Millisecond)
	defer srv.SetLatency(0)

	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	_, err := tenant.Logical().ReadWithContext(ctx, fx.kvMount+"/data/payments/db")
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("read with 100ms deadline and 300ms latency: %v, want deadline exceeded", err)
	}
}

func TestCountsLogins(t *testing.T) {
	srv := requireTestServer(t, "request counters")
	srv.ResetCounts()
	tenant := login(t, payments)
	for range 3 {
		if _, err := tenant.Logical().ReadWithContext(context.Background(), fx.kvMount+"/data/payments/db"); err != nil {
			t.Fatalf("read: %v", err)
		}
	}
	if got := srv.Count(baotest.OpLogin); got != 1 {
		t.Errorf("Count(OpLogin) = %d, want 1", got)
	}
	if got := srv.Count(baotest.OpKVRead); got != 3 {
		t.Errorf("Count(OpKVRead) = %d, want 3", got)
	}
}

func TestLeaseExpiresWithClock(t *testing.T) {
	srv := requireTestServer(t, "moving the clock past max_ttl")
	requireDatabase(t)
	ctx := context.Background()
	c := login(t, payments)
	id := dbCreds(t, c).LeaseID

	tg.advance(dbDefaultTTL + time.Second)
	if !srv.Revoked(id) {
		t.Error("lease not revoked after its TTL passed")
	}
	_, err := c.Sys().RenewWithContext(ctx, id, 60)
	wantResponseError(t, err, http.StatusBadRequest, "lease not found")
}
