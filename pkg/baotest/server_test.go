package baotest_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/google/go-cmp/cmp"
	"github.com/openbao/openbao/api/v2"

	"github.com/phantom-sec/phantom/pkg/baotest"
)

func wantAPIError(t *testing.T, err error, status int, messages ...string) {
	t.Helper()
	var respErr *api.ResponseError
	if !errors.As(err, &respErr) {
		t.Fatalf("error = %v, want *api.ResponseError with status %d", err, status)
	}
	if respErr.StatusCode != status {
		t.Errorf("status = %d, want %d (errors %q)", respErr.StatusCode, status, respErr.Errors)
	}
	if messages == nil {
		messages = []string{}
	}
	got := respErr.Errors
	if got == nil {
		got = []string{}
	}
	if diff := cmp.Diff(messages, got); diff != "" {
		t.Errorf("errors mismatch (-want +got):\n%s", diff)
	}
}

func TestFailNextCountsDown(t *testing.T) {
	t.Parallel()
	e := newReplayEnv(t)
	tenant, err := e.srv.NewClient(e.login())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	e.srv.FailNext(2, http.StatusBadGateway)
	for i := range 2 {
		_, err := tenant.Logical().ReadWithContext(ctx, "secret/data/payments/db")
		wantAPIError(t, err, http.StatusBadGateway, "upstream rate limited")
		if t.Failed() {
			t.Fatalf("request %d was not failed", i)
		}
	}
	if _, err := tenant.Logical().ReadWithContext(ctx, "secret/data/payments/db"); err != nil {
		t.Errorf("third request: %v, want success", err)
	}

	e.srv.FailNext(1, http.StatusTooManyRequests)
	status, _ := e.do("GET", "/v1/sys/health", "", nil)
	if status != http.StatusTooManyRequests {
		t.Errorf("health with an injected 429: status %d", status)
	}
	e.srv.FailNext(5, 500)
	e.srv.FailNext(0, 0)
	if status, _ := e.do("GET", "/v1/sys/health", "", nil); status != http.StatusOK {
		t.Errorf("health after clearing failures: status %d", status)
	}
}

func TestSetDownKeepsPort(t *testing.T) {
	t.Parallel()
	srv := baotest.New(t)
	url := srv.URL()
	c, err := srv.NewClient("")
	if err != nil {
		t.Fatal(err)
	}

	srv.SetDown(true)
	srv.SetDown(true)
	if _, err := c.Sys().Health(); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("health while down: %v, want connection refused", err)
	}
	srv.SetDown(false)
	if srv.URL() != url {
		t.Errorf("URL changed from %s to %s", url, srv.URL())
	}
	if _, err := c.Sys().Health(); err != nil {
		t.Errorf("health after coming back: %v", err)
	}

	srv.SetDown(true)
	if err := srv.Close(); err != nil {
		t.Errorf("close while down: %v", err)
	}
}

func TestHealthCodes(t *testing.T) {
	t.Parallel()
	e := newReplayEnv(t)
	e.srv.Seal()
	tests := []struct {
		query string
		want  int
	}{
		{"", http.StatusServiceUnavailable},
		{"?sealedcode=299", 299},
		{"?standbyok=true", http.StatusServiceUnavailable},
		{"?sealedcode=abc", http.StatusBadRequest},
	}
	for _, tt := range tests {
		if status, _ := e.do("GET", "/v1/sys/health"+tt.query, "", nil); status != tt.want {
			t.Errorf("sealed health%s: status %d, want %d", tt.query, status, tt.want)
		}
	}
	e.srv.Unseal()
	if status, _ := e.do("GET", "/v1/sys/health?activecode=204", "", nil); status != http.StatusNoContent {
		t.Errorf("health with activecode=204: status %d", status)
	}
	if status, body := e.do("HEAD", "/v1/sys/health", "", nil); status != http.StatusOK || body != nil {
		t.Errorf("HEAD health: status %d, body %v", status, body)
	}
}

func TestListMethodsAndCounts(t *testing.T) {
	t.Parallel()
	e := newReplayEnv(t)
	e.srv.ResetCounts()
	token := e.login()

	status, body := e.do("LIST", "/v1/secret/metadata/phantom/acceptance/payments", token, nil)
	if status != http.StatusOK {
		t.Fatalf("LIST without trailing slash: status %d, body %v", status, body)
	}
	status, _ = e.do("GET", "/v1/secret/metadata/phantom/acceptance/payments/?list=true", token, nil)
	if status != http.StatusOK {
		t.Errorf("GET ?list=true: status %d", status)
	}

	want := map[baotest.Op]int{baotest.OpLogin: 1, baotest.OpKVList: 2, baotest.OpKVRead: 0}
	for op, n := range want {
		if got := e.srv.Count(op); got != n {
			t.Errorf("Count(%s) = %d, want %d", op, got, n)
		}
	}
}

func TestRequestErrors(t *testing.T) {
	t.Parallel()
	e := newReplayEnv(t)
	root := e.srv.RootToken()
	tests := []struct {
		name, method, path string
		body               any
		status             int
		errs               []any
	}{
		{name: "unsupported operation", method: "DELETE", path: "/v1/auth/jwt/login", status: 405, errs: []any{"unsupported operation"}},
		{name: "unsupported path in mount", method: "GET", path: "/v1/secret/nothing/here", status: 404, errs: []any{"unsupported path"}},
		{name: "unknown mount", method: "GET", path: "/v1/nosuch/x", status: 404, errs: []any{`no handler for route "nosuch/x". route entry not found.`}},
		{name: "unknown method", method: "TRACE", path: "/v1/secret/data/x", status: 405, errs: []any{}},
		{name: "mount conflict", method: "POST", path: "/v1/sys/mounts/secret/inner", body: map[string]any{"type": "kv", "options": map[string]any{"version": "2"}}, status: 400, errs: []any{"path is already in use at secret/"}},
		{name: "unknown engine", method: "POST", path: "/v1/sys/mounts/x", body: map[string]any{"type": "ssh"}, status: 400, errs: []any{"plugin not found in the catalog: ssh"}},
		{name: "kv version 1", method: "POST", path: "/v1/sys/mounts/v1kv", body: map[string]any{"type": "kv"}, status: 400, errs: []any{"baotest: KV version 1 (set options.version to 2) is not supported by the test server"}},
		{name: "delete default policy", method: "DELETE", path: "/v1/sys/policies/acl/default", status: 400, errs: []any{"cannot delete default policy"}},
		{name: "write root policy", method: "PUT", path: "/v1/sys/policies/acl/root", body: map[string]any{"policy": `path "x" { capabilities = ["read"] }`}, status: 400, errs: []any{`cannot update "root" policy`}},
		{name: "bad policy", method: "PUT", path: "/v1/sys/policies/acl/bad", body: map[string]any{"policy": `path "x" { capabilities = ["fly"] }`}, status: 400, errs: []any{`failed to parse policy: path "x": invalid capability "fly"`}},
		{name: "jwt role without bindings", method: "POST", path: "/v1/auth/jwt/role/open", body: map[string]any{"role_type": "jwt", "user_claim": "sub"}, status: 400, errs: []any{"must have at least one bound constraint when creating/updating a role"}},
		{name: "jwt role claim_mappings as string", method: "POST", path: "/v1/auth/jwt/role/x", body: map[string]any{"role_type": "jwt", "user_claim": "sub", "bound_audiences": "a", "claim_mappings": "a=b"}, status: 400},
		{name: "reserved metadata key", method: "POST", path: "/v1/auth/jwt/role/x", body: map[string]any{"role_type": "jwt", "user_claim": "sub", "bound_audiences": "a", "claim_mappings": map[string]any{"a": "role"}}, status: 400, errs: []any{`metadata key "role" is reserved and may not be a mapping destination`}},
		{name: "unknown database role", method: "GET", path: "/v1/database/creds/nosuch", status: 400, errs: []any{"unknown role: nosuch"}},
		{name: "missing policy", method: "GET", path: "/v1/sys/policies/acl/nosuch", status: 404, errs: []any{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, body := e.do(tt.method, tt.path, root, tt.body)
			if status != tt.status {
				t.Errorf("status %d, want %d (body %v)", status, tt.status, body)
			}
			if tt.errs == nil {
				return
			}
			if diff := cmp.Diff(tt.errs, field(body, "errors")); diff != "" {
				t.Errorf("errors mismatch (-want +got):\n%s", diff)
			}
		})
	}

	for header, value := range map[string]string{"X-Vault-Namespace": "team-a", "X-Vault-Wrap-TTL": "60s"} {
		req, _ := http.NewRequest("GET", e.srv.URL()+"/v1/secret/data/payments/db", nil)
		req.Header.Set("X-Vault-Token", root)
		req.Header.Set(header, value)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("request with %s: status %d, want 400", header, resp.StatusCode)
		}
	}

	req, _ := http.NewRequest("POST", e.srv.URL()+"/v1/auth/jwt/login", strings.NewReader("{not json"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("malformed JSON: status %d, want 400", resp.StatusCode)
	}
}

func TestJWTLeewayAndES256(t *testing.T) {
	t.Parallel()
	e := newReplayEnv(t)
	ctx := context.Background()

	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(ecKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	ecPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	if err := baotest.EnableJWTAuth(ctx, e.root, "ec", replayIssuerURL, ecPEM); err != nil {
		t.Fatal(err)
	}
	if err := baotest.WriteJWTRole(ctx, e.root, "ec", "r", baotest.JWTRole{BoundAudiences: []string{"openbao"}, TokenPolicies: []string{"payments"}}); err != nil {
		t.Fatal(err)
	}

	now := e.clock.Now()
	tests := []struct {
		name    string
		expAgo  time.Duration
		wantErr string
	}{
		{name: "valid", expAgo: -time.Minute},
		{name: "expired within leeway", expAgo: 30 * time.Second},
		{name: "expired beyond leeway", expAgo: 90 * time.Second, wantErr: "error validating token: invalid expiration time (exp) claim: token is expired"},
	}
	for _, tt := range tests {
		claims := baotest.PodClaims(replayIssuerURL, paymentsPod, []string{"openbao"}, now.Add(-10*time.Minute), 10*time.Minute-tt.expAgo)
		tok := signES256(t, ecKey, claims)
		_, err := e.root.Logical().WriteWithContext(ctx, "auth/ec/login", map[string]any{"role": "r", "jwt": tok})
		if tt.wantErr == "" && err != nil {
			t.Errorf("%s: login: %v", tt.name, err)
		}
		if tt.wantErr != "" {
			wantAPIError(t, err, http.StatusBadRequest, tt.wantErr)
		}
	}
}

func signES256(t *testing.T, key *ecdsa.PrivateKey, claims map[string]any) string {
	t.Helper()
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: key}, nil)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(claims)
	if err != nil {
		t.Fatal(err)
	}
	jws, err := signer.Sign(raw)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestChildTokens(t *testing.T) {
	t.Parallel()
	e := newReplayEnv(t)
	ctx := context.Background()

	if err := baotest.WritePolicy(ctx, e.root, "creator", `path "auth/token/create" { capabilities = ["update"] }`); err != nil {
		t.Fatal(err)
	}
	limited, err := e.root.Auth().Token().CreateWithContext(ctx, &api.TokenCreateRequest{Policies: []string{"payments", "creator"}, NumUses: 2})
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	c, err := e.srv.NewClient(limited.Auth.ClientToken)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Auth().Token().CreateWithContext(ctx, &api.TokenCreateRequest{Policies: []string{"root"}})
	wantAPIError(t, err, http.StatusBadRequest, "child policies must be subset of parent")
	if _, err := c.Auth().Token().LookupSelfWithContext(ctx); err != nil {
		t.Errorf("second use: %v", err)
	}
	_, err = c.Auth().Token().LookupSelfWithContext(ctx)
	wantAPIError(t, err, http.StatusForbidden, "permission denied")
}

func TestRevocationCascades(t *testing.T) {
	t.Parallel()
	e := newReplayEnv(t)
	ctx := context.Background()
	token := e.login()
	lease := e.creds(token)
	users := e.srv.DatabaseUsers("database")
	if len(users) != 1 || e.srv.LeaseCount() != 1 || e.srv.TokenCount() != 1 {
		t.Fatalf("after one login and one lease: users %v, leases %d, tokens %d", users, e.srv.LeaseCount(), e.srv.TokenCount())
	}

	if err := baotest.DisableAuth(ctx, e.root, "jwt"); err != nil {
		t.Fatal(err)
	}
	if !e.srv.Revoked(lease) || e.srv.LeaseCount() != 0 || e.srv.TokenCount() != 0 || len(e.srv.DatabaseUsers("database")) != 0 {
		t.Errorf("after disabling the auth method: revoked %v, leases %d, tokens %d", e.srv.Revoked(lease), e.srv.LeaseCount(), e.srv.TokenCount())
	}
	if info, ok := e.srv.Lease(lease); !ok || !info.Revoked || info.Path != "database/creds/app" {
		t.Errorf("Lease(%s) = %+v, %v", lease, info, ok)
	}
}

func TestPKILeaseRevocation(t *testing.T) {
	t.Parallel()
	e := newReplayEnv(t)
	ctx := context.Background()
	if _, err := baotest.EnablePKI(ctx, e.root, "pki", "Test CA", 24*time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := baotest.WritePKIRole(ctx, e.root, "pki", "web", baotest.PKIRole{AllowAnyName: true, KeyType: "ec", GenerateLease: true}); err != nil {
		t.Fatal(err)
	}
	secret, err := e.root.Logical().WriteWithContext(ctx, "pki/issue/web", map[string]any{"common_name": "a.example", "ttl": "1h"})
	if err != nil {
		t.Fatalf("issue: %v", err)
	}
	if secret.LeaseID == "" || secret.LeaseDuration != 3600 || secret.Renewable {
		t.Errorf("lease = (%q, %d, %v), want a one-hour non-renewable lease", secret.LeaseID, secret.LeaseDuration, secret.Renewable)
	}
	serial := secret.Data["serial_number"].(string)
	if err := e.root.Sys().RevokeWithContext(ctx, secret.LeaseID); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	if !e.srv.PKICertificateRevoked("pki", serial) {
		t.Error("certificate not reported revoked after its lease was revoked")
	}
}

func TestConcurrentRequests(t *testing.T) {
	t.Parallel()
	e := newReplayEnv(t)
	ctx := context.Background()

	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pod := paymentsPod
			pod.PodName = fmt.Sprintf("api-%d", i)
			tok, err := e.issuer.SignAt(pod, []string{"openbao"}, e.clock.Now(), time.Minute)
			if err != nil {
				errs <- err
				return
			}
			secret, err := e.root.Logical().WriteWithContext(ctx, "auth/jwt/login", map[string]any{"role": "payments", "jwt": tok})
			if err != nil {
				errs <- err
				return
			}
			c, err := e.srv.NewClient(secret.Auth.ClientToken)
			if err != nil {
				errs <- err
				return
			}
			if _, err := c.Logical().ReadWithContext(ctx, "secret/data/payments/db"); err != nil {
				errs <- err
			}
			if _, err := c.Logical().ReadWithContext(ctx, "database/creds/app"); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := e.srv.LeaseCount(); got != 20 {
		t.Errorf("LeaseCount = %d, want 20", got)
	}
}

func TestTLS(t *testing.T) {
	t.Parallel()
	srv := baotest.NewWithOptions(t, baotest.Options{TLS: true})
	if !strings.HasPrefix(srv.URL(), "https://127.0.0.1:") || srv.CACertPEM() == nil {
		t.Fatalf("URL %s, CA %d bytes, want HTTPS with a CA", srv.URL(), len(srv.CACertPEM()))
	}
	c, err := srv.NewClient(srv.RootToken())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Auth().Token().LookupSelf(); err != nil {
		t.Errorf("lookup-self over TLS: %v", err)
	}
	if _, err := http.Get(srv.URL() + "/v1/sys/health"); err == nil {
		t.Error("a client without the CA connected, want a certificate error")
	}
	if plain := baotest.New(t); plain.CACertPEM() != nil {
		t.Error("CACertPEM without TLS is not nil")
	}
}

func TestRootTokenLookup(t *testing.T) {
	t.Parallel()
	e := newReplayEnv(t)
	secret, err := e.root.Auth().Token().LookupSelf()
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]any{"root"}, secret.Data["policies"]); diff != "" {
		t.Errorf("policies mismatch (-want +got):\n%s", diff)
	}
	if secret.Data["expire_time"] != nil || secret.Data["ttl"] != json.Number("0") {
		t.Errorf("root token expire_time %v, ttl %v, want null and 0", secret.Data["expire_time"], secret.Data["ttl"])
	}
	_, err = e.root.Auth().Token().RenewSelf(0)
	wantAPIError(t, err, http.StatusBadRequest, "lease is not renewable")
}

func TestLogsOmitSecrets(t *testing.T) {
	t.Parallel()
	const canary = "canary-7f3e9b2c"
	var logs safeBuffer
	logger := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := baotest.NewWithOptions(t, baotest.Options{Logger: logger})
	root, err := srv.NewClient(srv.RootToken())
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := baotest.EnableKV2(ctx, root, "secret"); err != nil {
		t.Fatal(err)
	}
	if _, err := baotest.PutKV2(ctx, root, "secret", "app", map[string]any{"password": canary}); err != nil {
		t.Fatal(err)
	}
	_, err = root.Logical().WriteWithContext(ctx, "secret/data/bad", map[string]any{"data": canary})
	wantAPIError(t, err, http.StatusBadRequest, `error converting input for field "data": expected map, got string`)
	if _, err := root.Logical().ReadWithContext(ctx, "secret/data/app"); err != nil {
		t.Fatal(err)
	}

	out := logs.String()
	if !strings.Contains(out, "request served") {
		t.Fatalf("no request lines logged: %q", out)
	}
	for _, secret := range []string{canary, srv.RootToken()} {
		if strings.Contains(out, secret) {
			t.Errorf("logs contain a secret value: %q", out)
		}
	}
}

// safeBuffer is a strings.Builder safe for concurrent writes.
type safeBuffer struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (b *safeBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *safeBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
