package bao

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/openbao/openbao/api/v2"

	"github.com/phantom-sec/phantom/pkg/baotest"
	"github.com/phantom-sec/phantom/pkg/secret"
)

func TestClassify(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		err  error
		want error
		text string
	}{
		{"forbidden", &api.ResponseError{StatusCode: 403, Errors: []string{"1 error occurred:\n\t* permission denied\n\n"}}, ErrPermissionDenied, "HTTP 403: 1 error occurred: * permission denied"},
		{"missing", &api.ResponseError{StatusCode: 404}, ErrNotFound, "HTTP 404"},
		{"sealed", &api.ResponseError{StatusCode: 503, Errors: []string{"Vault is sealed"}}, ErrUnavailable, "Vault is sealed"},
		{"rate limited", &api.ResponseError{StatusCode: 429}, ErrUnavailable, "Too Many Requests"},
		{"bad request", &api.ResponseError{StatusCode: 400, Errors: []string{"missing token"}}, ErrInvalidRequest, "missing token"},
		{"refused", &url.Error{Op: "Get", URL: "http://127.0.0.1:1/v1/x?list=true", Err: syscall.ECONNREFUSED}, ErrUnavailable, "connection refused"},
		{"deadline", context.DeadlineExceeded, ErrUnavailable, "deadline"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got := classify(fmt.Errorf("request: %w", tt.err))
			if !errors.Is(got, tt.want) {
				t.Errorf("classify() = %v, want %v", got, tt.want)
			}
			if !strings.Contains(got.Error(), tt.text) {
				t.Errorf("classify() = %q, want it to contain %q", got, tt.text)
			}
			if strings.Contains(got.Error(), "list=true") {
				t.Errorf("classify() = %q keeps the query string", got)
			}
		})
	}
}

func TestNewIgnoresTokenFromEnvironment(t *testing.T) {
	t.Setenv("VAULT_TOKEN", "env-token")
	t.Setenv("BAO_TOKEN", "env-token")
	c, err := New(Config{Address: "http://127.0.0.1:1", AuthMethod: AuthJWT})
	if err != nil {
		t.Fatal(err)
	}
	if c.base.Token() != "" {
		t.Error("client picked up a token from the environment; Phantom must not read with its own identity")
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	t.Parallel()
	if _, err := New(Config{Address: "http://x", AuthMethod: "ldap"}); err == nil || !strings.Contains(err.Error(), `"ldap"`) {
		t.Errorf("New(ldap) = %v, want an error naming the method", err)
	}
	if _, err := New(Config{AuthMethod: AuthJWT}); err == nil || !strings.Contains(err.Error(), "address is empty") {
		t.Errorf("New(no address) = %v, want an error about the address", err)
	}
}

// TestSessionsReloginNearExpiry checks that a token is reused until two
// thirds of its TTL have passed, then replaced by a new login.
func TestSessionsReloginNearExpiry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	clock := baotest.NewClock(time.Now())
	server := baotest.NewWithOptions(t, baotest.Options{Now: clock.Now})
	issuer, jwt := provisionTenant(t, server, clock.Now())

	client, err := New(Config{Address: server.URL(), AuthMethod: AuthJWT})
	if err != nil {
		t.Fatal(err)
	}
	sessions := NewSessions(client, clock.Now)
	id := Identity{Namespace: "payments", ServiceAccount: "api", Role: "payments"}

	first, err := sessions.Get(ctx, id, jwt)
	if err != nil {
		t.Fatalf("Get() = %v", err)
	}
	clock.Advance(9 * time.Minute) // TTL 15m: 9m < 10m
	again, err := sessions.Get(ctx, id, jwt)
	if err != nil {
		t.Fatal(err)
	}
	if again != first || server.Count(baotest.OpLogin) != 1 {
		t.Errorf("after 9 of 15 minutes: logins = %d, same session = %v; want 1 login and reuse", server.Count(baotest.OpLogin), again == first)
	}

	clock.Advance(2 * time.Minute)
	jwt = signFor(t, issuer, clock.Now())
	renewed, err := sessions.Get(ctx, id, jwt)
	if err != nil {
		t.Fatal(err)
	}
	if renewed == first || server.Count(baotest.OpLogin) != 2 {
		t.Errorf("after 11 of 15 minutes: logins = %d, want a second login", server.Count(baotest.OpLogin))
	}
}

func TestWithSessionRetriesRevokedToken(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	server := baotest.New(t)
	_, jwt := provisionTenant(t, server, time.Now())
	client, err := New(Config{Address: server.URL(), AuthMethod: AuthJWT})
	if err != nil {
		t.Fatal(err)
	}
	sessions := NewSessions(client, nil)
	id := Identity{Namespace: "payments", ServiceAccount: "api", Role: "payments"}

	session, err := sessions.Get(ctx, id, jwt)
	if err != nil {
		t.Fatal(err)
	}
	// Revoke the cached token behind the cache's back.
	if _, err := session.api.Logical().WriteWithContext(ctx, "auth/token/revoke-self", nil); err != nil {
		t.Fatalf("revoke-self: %v", err)
	}

	err = sessions.WithSession(ctx, id, jwt, func(s *Session) error {
		_, err := s.ReadKV(ctx, "secret", "payments/db")
		return err
	})
	if err != nil {
		t.Errorf("WithSession() after revocation = %v, want a transparent new login", err)
	}
	if n := server.Count(baotest.OpLogin); n != 2 {
		t.Errorf("logins = %d, want 2", n)
	}
}

func provisionTenant(t *testing.T, server *baotest.Server, now time.Time) (*baotest.Issuer, secret.String) {
	t.Helper()
	ctx := context.Background()
	cfg := api.DefaultConfig()
	cfg.Address = server.URL()
	admin, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	admin.SetToken(server.RootToken())
	issuer, err := baotest.NewIssuer("https://kubernetes.default.svc")
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range []error{
		baotest.EnableKV2(ctx, admin, "secret"),
		baotest.EnableJWTAuth(ctx, admin, "jwt", issuer.URL(), issuer.PublicKeyPEM()),
		baotest.WritePolicy(ctx, admin, "payments", `path "secret/data/payments/*" { capabilities = ["read"] }`),
		baotest.WriteJWTRole(ctx, admin, "jwt", "payments", baotest.JWTRole{
			BoundAudiences: []string{"openbao"}, UserClaim: "sub", TokenPolicies: []string{"payments"}, TokenTTL: 15 * time.Minute,
		}),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	if _, err := admin.KVv2("secret").Put(ctx, "payments/db", map[string]any{"password": "x"}); err != nil {
		t.Fatal(err)
	}
	return issuer, signFor(t, issuer, now)
}

func signFor(t *testing.T, issuer *baotest.Issuer, now time.Time) secret.String {
	t.Helper()
	tok, err := issuer.SignAt(baotest.PodIdentity{Namespace: "payments", ServiceAccount: "api", PodName: "api-0", PodUID: "u"},
		[]string{"openbao"}, now, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return secret.String(tok)
}
