package contract

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/openbao/openbao/api/v2"
)

func TestTokenLookupSelf(t *testing.T) {
	t.Parallel()
	secret, err := login(t, payments).Auth().Token().LookupSelfWithContext(context.Background())
	if err != nil {
		t.Fatalf("lookup-self: %v", err)
	}
	d := secret.Data

	wantDisplay := fx.jwtMount + "-system:serviceaccount:payments:api"
	checks := map[string]any{
		"display_name": wantDisplay,
		"path":         "auth/" + fx.jwtMount + "/login",
		"type":         "service",
		"orphan":       true,
		"renewable":    true,
		"creation_ttl": json.Number("900"),
		"num_uses":     json.Number("0"),
	}
	for key, want := range checks {
		if got := d[key]; got != want {
			t.Errorf("%s = %v (%T), want %v", key, got, got, want)
		}
	}
	if diff := cmp.Diff([]any{"default", fx.policy}, d["policies"]); diff != "" {
		t.Errorf("policies mismatch (-want +got):\n%s", diff)
	}
	meta, _ := d["meta"].(map[string]any)
	if meta["pod"] != "api-0" || meta["role"] != "payments" {
		t.Errorf("meta = %v, want pod api-0 and role payments", meta)
	}
	ttl, err := secret.TokenTTL()
	if err != nil || ttl <= 0 || ttl > tokenTTL {
		t.Errorf("ttl = %v (%v), want within (0, %v]", ttl, err, tokenTTL)
	}
	for _, key := range []string{"accessor", "entity_id", "expire_time", "issue_time", "id"} {
		if s, _ := d[key].(string); s == "" {
			t.Errorf("%s is empty", key)
		}
	}
}

func TestTokenRenewSelf(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := login(t, payments)

	secret, err := c.Auth().Token().RenewSelfWithContext(ctx, 600)
	if err != nil {
		t.Fatalf("renew-self: %v", err)
	}
	if secret.Auth == nil || secret.Auth.LeaseDuration != 600 {
		t.Fatalf("renew-self auth = %+v, want lease_duration 600", secret.Auth)
	}
	if secret.Auth.ClientToken != c.Token() {
		t.Error("renew-self returned another token")
	}

	// The role's max TTL is one hour: a larger increment is capped.
	secret, err = c.Auth().Token().RenewSelfWithContext(ctx, 7200)
	if err != nil {
		t.Fatalf("renew-self past max: %v", err)
	}
	if d := secret.Auth.LeaseDuration; d <= 0 || d > 3600 {
		t.Errorf("lease_duration = %d, want capped at 3600", d)
	}
	if len(secret.Warnings) != 1 || !strings.Contains(secret.Warnings[0], "exceeded the effective max_ttl") {
		t.Errorf("warnings = %q, want one max_ttl warning", secret.Warnings)
	}
}

func TestTokenInvalid(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	bogus := client(t, "s.AAAAAAAAAAAAAAAAAAAAAAAA")
	_, err := bogus.Auth().Token().LookupSelfWithContext(ctx)
	wantResponseError(t, err, http.StatusForbidden, "permission denied")

	_, err = bogus.Logical().ReadWithContext(ctx, fx.kvMount+"/data/payments/db")
	wantResponseError(t, err, http.StatusForbidden, "permission denied")

	_, err = client(t, "").Logical().ReadWithContext(ctx, fx.kvMount+"/data/payments/db")
	wantResponseError(t, err, http.StatusForbidden, "permission denied")
}

func TestTokenRevokeSelf(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := login(t, payments)
	if err := c.Auth().Token().RevokeSelfWithContext(ctx, ""); err != nil {
		t.Fatalf("revoke-self: %v", err)
	}
	_, err := c.Auth().Token().LookupSelfWithContext(ctx)
	wantResponseError(t, err, http.StatusForbidden, "permission denied")
}

// TestTokenExpires lets a short token expire. It moves the test server's
// clock, or waits on a real server, so it does not run in parallel.
func TestTokenExpires(t *testing.T) {
	ctx := context.Background()
	secret, err := rootClient(t).Auth().Token().CreateWithContext(ctx, &api.TokenCreateRequest{TTL: "2s", Policies: []string{"default"}})
	if err != nil {
		t.Fatalf("create token: %v", err)
	}
	c := client(t, secret.Auth.ClientToken)
	if _, err := c.Auth().Token().LookupSelfWithContext(ctx); err != nil {
		t.Fatalf("lookup-self before expiry: %v", err)
	}

	tg.advance(3 * time.Second)
	_, err = c.Auth().Token().LookupSelfWithContext(ctx)
	wantResponseError(t, err, http.StatusForbidden, "permission denied")
}
