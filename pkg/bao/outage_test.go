package bao

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/phantom-sec/phantom/pkg/baotest"
	"github.com/phantom-sec/phantom/pkg/circuit"
)

// TestBreakerFailsFastWhenOpen opens the breaker with failed reads: later
// requests fail without reaching OpenBao, and a successful probe closes it.
func TestBreakerFailsFastWhenOpen(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	server := baotest.New(t)
	_, jwt := provisionTenant(t, server, time.Now())
	var client *Client
	breaker := circuit.New(circuit.Config{Name: "OpenBao", Probe: func(ctx context.Context) error { return client.Probe(ctx) },
		FirstBackoff: 20 * time.Millisecond, MaxProbeInterval: 50 * time.Millisecond})
	t.Cleanup(breaker.Close)
	client, err := New(Config{Address: server.URL(), AuthMethod: AuthJWT, Breaker: breaker})
	if err != nil {
		t.Fatal(err)
	}
	session, err := NewSessions(client, nil).Get(ctx, Identity{Namespace: "payments", ServiceAccount: "api", Role: "payments"}, jwt)
	if err != nil {
		t.Fatal(err)
	}

	server.Seal()
	for range circuit.DefaultThreshold {
		if _, err := session.ReadKV(ctx, "secret", "payments/db"); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("ReadKV() sealed = %v, want ErrUnavailable", err)
		}
	}
	server.ResetCounts()
	_, err = session.ReadKV(ctx, "secret", "payments/db")
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, circuit.ErrOpen) {
		t.Errorf("ReadKV() with the breaker open = %v, want ErrUnavailable and ErrOpen", err)
	}
	if n := server.Count(baotest.OpKVRead); n != 0 {
		t.Errorf("reads that reached OpenBao with the breaker open = %d, want 0", n)
	}

	server.Unseal()
	waitCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := breaker.Wait(waitCtx); err != nil {
		t.Fatalf("breaker did not close after unseal: %v", err)
	}
	if _, err := session.ReadKV(ctx, "secret", "payments/db"); err != nil {
		t.Errorf("ReadKV() after recovery = %v", err)
	}
}

func TestProbeReportsUnreachable(t *testing.T) {
	t.Parallel()
	server := baotest.New(t)
	client, err := New(Config{Address: server.URL(), AuthMethod: AuthJWT})
	if err != nil {
		t.Fatal(err)
	}
	if err := client.Probe(context.Background()); err != nil {
		t.Fatalf("Probe() of a healthy server = %v", err)
	}

	server.Seal()
	err = client.Probe(context.Background())
	if !errors.Is(err, ErrUnavailable) || errors.Is(err, circuit.ErrUnreachable) {
		t.Errorf("Probe() of a sealed server = %v, want ErrUnavailable without ErrUnreachable", err)
	}
	server.Unseal()

	server.SetDown(true)
	defer server.SetDown(false)
	if err := client.Probe(context.Background()); !errors.Is(err, circuit.ErrUnreachable) {
		t.Errorf("Probe() of a server that refuses connections = %v, want ErrUnreachable", err)
	}
}

// TestRenewedRenewsTokenPastTwoThirds checks that background work gets a
// session renewed with renew-self rather than a new login.
func TestRenewedRenewsTokenPastTwoThirds(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clock := baotest.NewClock(time.Now())
	server := baotest.NewWithOptions(t, baotest.Options{Now: clock.Now})
	_, jwt := provisionTenant(t, server, clock.Now())
	client, err := New(Config{Address: server.URL(), AuthMethod: AuthJWT})
	if err != nil {
		t.Fatal(err)
	}
	sessions := NewSessions(client, clock.Now)
	id := Identity{Namespace: "payments", ServiceAccount: "api", Role: "payments"}

	if _, err := sessions.Renewed(ctx, id); !errors.Is(err, ErrNoSession) {
		t.Fatalf("Renewed() without a login = %v, want ErrNoSession", err)
	}
	first, err := sessions.Get(ctx, id, jwt)
	if err != nil {
		t.Fatal(err)
	}

	clock.Advance(11 * time.Minute) // TTL 15m: past two thirds
	if s := sessions.Cached(id); s != first {
		t.Error("Cached() past two thirds of the TTL lost the valid session")
	}
	renewed, err := sessions.Renewed(ctx, id)
	if err != nil {
		t.Fatalf("Renewed() = %v", err)
	}
	if renewed != first || server.Count(baotest.OpTokenRenew) != 1 || server.Count(baotest.OpLogin) != 1 {
		t.Errorf("Renewed(): same session %v, renewals %d, logins %d; want the same session renewed once",
			renewed == first, server.Count(baotest.OpTokenRenew), server.Count(baotest.OpLogin))
	}

	// Renewed for another 15 minutes from now: still valid 14 minutes later.
	clock.Advance(14 * time.Minute)
	if s := sessions.Cached(id); s != first {
		t.Error("session expired although it was renewed")
	}
}

func TestSecretCodecRoundTrip(t *testing.T) {
	t.Parallel()
	s := NewSecret(map[string]any{"password": "x", "port": float64(5432)}, "database/creds/app/1", time.Minute, true)

	encoded, err := EncodeSecret(s)
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeSecret(encoded)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := got.Field("password"); string(v) != "x" || got.LeaseID != s.LeaseID || got.LeaseDuration != time.Minute || !got.Renewable {
		t.Errorf("DecodeSecret(EncodeSecret()) = %v %v %v, want the original", got.LeaseID, got.LeaseDuration, got.Renewable)
	}
	if bare := got.WithoutLease(); bare.LeaseID != "" || bare.Renewable {
		t.Errorf("WithoutLease() kept lease %q", bare.LeaseID)
	}
	if _, err := DecodeSecret([]byte(`{"lease_id":"x"}`)); err == nil {
		t.Error("DecodeSecret() of an entry without data succeeded")
	}
}
