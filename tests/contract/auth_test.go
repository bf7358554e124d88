package contract

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/phantom-sec/phantom/pkg/baotest"
)

func TestJWTLoginErrors(t *testing.T) {
	t.Parallel()
	now := tg.now()
	sign := func(iss *baotest.Issuer, claims map[string]any) string {
		t.Helper()
		tok, err := iss.SignClaims(claims)
		if err != nil {
			t.Fatalf("sign: %v", err)
		}
		return tok
	}
	claims := func(mutate func(map[string]any)) map[string]any {
		c := baotest.PodClaims(issuerURL, payments.pod, []string{audience}, now, 10*time.Minute)
		if mutate != nil {
			mutate(c)
		}
		return c
	}

	tests := []struct {
		name string
		body map[string]any
		want string
	}{
		{
			name: "wrong audience",
			body: map[string]any{"role": "payments", "jwt": sign(fx.issuer, claims(func(c map[string]any) { c["aud"] = []any{"vault"} }))},
			want: "error validating token: invalid audience (aud) claim: audience claim does not match any expected audience",
		},
		{
			name: "unknown key",
			body: map[string]any{"role": "payments", "jwt": sign(fx.stranger, claims(nil))},
			want: "error validating token: error verifying token signature: no known key successfully validated the token signature",
		},
		{
			name: "expired",
			body: map[string]any{"role": "payments", "jwt": sign(fx.issuer, claims(func(c map[string]any) {
				c["iat"], c["nbf"], c["exp"] = now.Add(-2*time.Hour).Unix(), now.Add(-2*time.Hour).Unix(), now.Add(-time.Hour).Unix()
			}))},
			want: "error validating token: invalid expiration time (exp) claim: token is expired",
		},
		{
			name: "not yet valid",
			body: map[string]any{"role": "payments", "jwt": sign(fx.issuer, claims(func(c map[string]any) {
				c["iat"], c["nbf"], c["exp"] = now.Add(time.Hour).Unix(), now.Add(time.Hour).Unix(), now.Add(2*time.Hour).Unix()
			}))},
			want: "error validating token: invalid not before (nbf) claim: token not yet valid",
		},
		{
			name: "wrong issuer",
			body: map[string]any{"role": "payments", "jwt": sign(fx.issuer, claims(func(c map[string]any) { c["iss"] = "https://other.example" }))},
			want: "error validating token: invalid issuer (iss) claim",
		},
		{
			name: "bound claims mismatch",
			body: map[string]any{"role": "payments", "jwt": jwtFor(t, billing.pod)},
			want: `error validating claims: claim "/kubernetes.io/namespace" does not match any associated bound claim values`,
		},
		{
			name: "bound claim missing",
			body: map[string]any{"role": "payments", "jwt": sign(fx.issuer, claims(func(c map[string]any) { delete(c, "kubernetes.io") }))},
			want: `error validating claims: claim "/kubernetes.io/namespace" is missing`,
		},
		{
			name: "user claim missing",
			body: map[string]any{"role": "payments", "jwt": sign(fx.issuer, claims(func(c map[string]any) { delete(c, "sub") }))},
			want: `claim "sub" not found in token`,
		},
		{
			name: "unknown role",
			body: map[string]any{"role": "nosuch", "jwt": jwtFor(t, payments.pod)},
			want: `role "nosuch" could not be found`,
		},
		{
			name: "missing jwt",
			body: map[string]any{"role": "payments"},
			want: "missing token",
		},
		{
			name: "missing role",
			body: map[string]any{"jwt": jwtFor(t, payments.pod)},
			want: "missing role",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := client(t, "").Logical().WriteWithContext(context.Background(), "auth/"+fx.jwtMount+"/login", tt.body)
			wantResponseError(t, err, http.StatusBadRequest, tt.want)
		})
	}
}

func TestJWTLoginIssuesTenantToken(t *testing.T) {
	t.Parallel()
	secret := loginSecret(t, payments)
	auth := secret.Auth

	if diff := cmp.Diff([]string{"default", fx.policy}, auth.Policies); diff != "" {
		t.Errorf("policies mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"default", fx.policy}, auth.TokenPolicies); diff != "" {
		t.Errorf("token_policies mismatch (-want +got):\n%s", diff)
	}
	wantMeta := map[string]string{"namespace": "payments", "pod": "api-0", "pod_uid": payments.pod.PodUID, "role": "payments"}
	if diff := cmp.Diff(wantMeta, auth.Metadata); diff != "" {
		t.Errorf("metadata from claim_mappings mismatch (-want +got):\n%s", diff)
	}
	if auth.LeaseDuration != int(tokenTTL/time.Second) {
		t.Errorf("lease_duration = %d, want %d", auth.LeaseDuration, int(tokenTTL/time.Second))
	}
	if !auth.Renewable {
		t.Error("renewable = false, want true")
	}
	if !auth.Orphan {
		t.Error("orphan = false, want true")
	}
	if auth.EntityID == "" || auth.Accessor == "" || auth.ClientToken == "" {
		t.Errorf("entity_id %q, accessor %q or client_token empty", auth.EntityID, auth.Accessor)
	}
}

func TestJWTLoginReusesEntity(t *testing.T) {
	t.Parallel()
	first, second := loginSecret(t, payments), loginSecret(t, payments)
	if first.Auth.EntityID != second.Auth.EntityID {
		t.Errorf("entity_id changed between logins of one service account: %q, %q", first.Auth.EntityID, second.Auth.EntityID)
	}
	if first.Auth.ClientToken == second.Auth.ClientToken {
		t.Error("two logins returned the same token")
	}
}

func TestTemplatedPolicyIsolatesTenants(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	pay := login(t, payments)

	secret, err := pay.Logical().ReadWithContext(ctx, fx.kvMount+"/data/payments/db")
	if err != nil {
		t.Fatalf("read own secret: %v", err)
	}
	if secret == nil {
		t.Fatal("read own secret: not found")
	}

	_, err = pay.Logical().ReadWithContext(ctx, fx.kvMount+"/data/billing/db")
	wantResponseError(t, err, http.StatusForbidden, "1 error occurred:\n\t* permission denied\n\n")

	_, err = pay.Logical().ListWithContext(ctx, fx.kvMount+"/metadata/billing/")
	wantResponseError(t, err, http.StatusForbidden, "1 error occurred:\n\t* permission denied\n\n")

	bill := login(t, billing)
	if _, err := bill.Logical().ReadWithContext(ctx, fx.kvMount+"/data/billing/db"); err != nil {
		t.Errorf("billing reads its own secret: %v", err)
	}
	_, err = bill.Logical().ReadWithContext(ctx, fx.kvMount+"/data/payments/db")
	wantResponseError(t, err, http.StatusForbidden, "1 error occurred:\n\t* permission denied\n\n")
}

func TestTenantCannotConfigure(t *testing.T) {
	t.Parallel()
	err := login(t, payments).Sys().PutPolicyWithContext(context.Background(), fx.policy, `path "*" { capabilities = ["sudo"] }`)
	wantResponseError(t, err, http.StatusForbidden, "1 error occurred:\n\t* permission denied\n\n")
}

func TestKubernetesLogin(t *testing.T) {
	requireTestServer(t, "real OpenBao confirms every Kubernetes login with the cluster's TokenReview API")
	t.Parallel()
	ctx := context.Background()
	path := "auth/" + fx.k8sMount + "/login"

	tok := jwtFor(t, payments.pod)
	secret, err := client(t, "").Logical().WriteWithContext(ctx, path, map[string]any{"role": "payments", "jwt": tok})
	if err != nil {
		t.Fatalf("log in: %v", err)
	}
	wantMeta := map[string]string{
		"role": "payments", "service_account_name": "api", "service_account_namespace": "payments",
		"service_account_uid": payments.pod.ServiceAccountUID, "service_account_secret_name": "",
	}
	if diff := cmp.Diff(wantMeta, secret.Auth.Metadata); diff != "" {
		t.Errorf("metadata mismatch (-want +got):\n%s", diff)
	}

	wrongAudience, err := fx.issuer.SignAt(payments.pod, []string{"vault"}, tg.now(), time.Hour)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	stranger, err := fx.stranger.SignAt(payments.pod, []string{audience}, tg.now(), time.Hour)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	otherSA := payments.pod
	otherSA.ServiceAccount = "admin"
	otherNamespace := payments.pod
	otherNamespace.Namespace = "billing"

	tests := []struct {
		name, role, jwt, want string
		status                int
	}{
		{name: "other namespace", role: "payments", jwt: jwtFor(t, otherNamespace), status: 403, want: "namespace not authorized"},
		{name: "other service account", role: "payments", jwt: jwtFor(t, otherSA), status: 403, want: "service account name not authorized"},
		{name: "wrong audience", role: "payments", jwt: wrongAudience, status: 403, want: "invalid audience (aud) claim: audience claim does not match any expected audience"},
		{name: "unknown key", role: "payments", jwt: stranger, status: 403, want: "permission denied"},
		{name: "unknown role", role: "nosuch", jwt: tok, status: 400, want: `invalid role name "nosuch"`},
		{name: "missing jwt", role: "payments", status: 400, want: "missing jwt"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := client(t, "").Logical().WriteWithContext(ctx, path, map[string]any{"role": tt.role, "jwt": tt.jwt})
			wantResponseError(t, err, tt.status, tt.want)
		})
	}
}

func TestUnknownPaths(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	resp, err := rootClient(t).Logical().ReadRawWithContext(ctx, "nosuch-"+fx.suffix+"/thing")
	if resp != nil {
		resp.Body.Close()
	}
	respErr := responseError(t, err)
	if respErr.StatusCode != http.StatusNotFound {
		t.Errorf("root read of unmounted path: status %d, want 404", respErr.StatusCode)
	}
	if len(respErr.Errors) != 1 || !strings.Contains(respErr.Errors[0], "no handler for route") {
		t.Errorf("errors = %q, want a no-handler error", respErr.Errors)
	}

	_, err = login(t, payments).Logical().ReadWithContext(ctx, "nosuch-"+fx.suffix+"/thing")
	wantResponseError(t, err, http.StatusForbidden, "1 error occurred:\n\t* permission denied\n\n")
}
