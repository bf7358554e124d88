package contract

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/phantom-sec/phantom/pkg/baotest"
)

// TestLeaseRevokeURLFormScopedByPolicy checks the revocation Phantom's node
// plugin sends on unpublish: the lease id in the URL
// (sys/leases/revoke/<lease id>), which a policy can grant for the paths
// of one tenant's leases only. The body form (sys/leases/revoke with
// lease_id) needs its own grant, so it is not what such a policy allows.
func TestLeaseRevokeURLFormScopedByPolicy(t *testing.T) {
	requireDatabase(t)
	ctx := context.Background()
	root := rootClient(t)
	name := "revoker-" + fx.suffix
	hcl := `path "` + fx.dbMount + `/creds/app" { capabilities = ["read"] }
path "sys/leases/revoke/` + fx.dbMount + `/creds/app/*" { capabilities = ["update"] }`
	if err := baotest.WritePolicy(ctx, root, name, hcl); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = baotest.DeletePolicy(ctx, root, name) })
	if err := baotest.WriteJWTRole(ctx, root, fx.jwtMount, name, baotest.JWTRole{
		BoundAudiences: []string{audience},
		BoundClaims:    map[string]any{"/kubernetes.io/namespace": []any{payments.pod.Namespace}},
		TokenPolicies:  []string{name},
		TokenTTL:       tokenTTL,
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = root.Logical().DeleteWithContext(ctx, "auth/"+fx.jwtMount+"/role/"+name) })
	c := login(t, tenant{role: name, pod: payments.pod})
	id := dbCreds(t, c).LeaseID

	// The body form is not granted.
	_, err := c.Logical().WriteWithContext(ctx, "sys/leases/revoke", map[string]any{"lease_id": id})
	wantResponseError(t, err, http.StatusForbidden, "1 error occurred:\n\t* permission denied\n\n")
	// A lease id outside the granted prefix is refused.
	_, err = c.Logical().WriteWithContext(ctx, "sys/leases/revoke/"+fx.dbMount+"/creds/other/x", nil)
	wantResponseError(t, err, http.StatusForbidden, "1 error occurred:\n\t* permission denied\n\n")

	// The URL form for the tenant's own lease succeeds and revokes it.
	if _, err := c.Logical().WriteWithContext(ctx, "sys/leases/revoke/"+id, nil); err != nil {
		t.Fatalf("revoke %s in the URL: %v", id, err)
	}
	_, err = root.Sys().RenewWithContext(ctx, id, 60)
	respErr := responseError(t, err)
	if respErr.StatusCode != http.StatusBadRequest {
		t.Errorf("renew after URL-form revoke: status %d, want 400", respErr.StatusCode)
	}
}

// TestLeaseRenewGrantsLessNearMaxTTL checks what Phantom's renewal
// schedule relies on: renewals grant the requested TTL until max_ttl is
// near, then only the time left, with a warning, so the lease must be
// replaced by new credentials before it ends.
func TestLeaseRenewGrantsLessNearMaxTTL(t *testing.T) {
	requireDatabase(t)
	requireTestServer(t, "moving the clock towards max_ttl")
	ctx := context.Background()
	c := login(t, payments)
	id := dbCreds(t, c).LeaseID
	increment := int(dbDefaultTTL / time.Second)

	// Renew every 100 s, about two thirds into each 2-minute term, while
	// more than the increment is left of the 6-minute max_ttl.
	for range 2 {
		tg.clock.Advance(100 * time.Second)
		renewed, err := c.Sys().RenewWithContext(ctx, id, increment)
		if err != nil {
			t.Fatalf("renew: %v", err)
		}
		if renewed.LeaseDuration != increment || len(renewed.Warnings) != 0 {
			t.Fatalf("renew before max_ttl = %d s, warnings %q; want %d s, none", renewed.LeaseDuration, renewed.Warnings, increment)
		}
	}
	tg.clock.Advance(100 * time.Second) // 60 s of max_ttl left
	capped, err := c.Sys().RenewWithContext(ctx, id, increment)
	if err != nil {
		t.Fatalf("renew 60 s before max_ttl: %v", err)
	}
	if capped.LeaseDuration <= 0 || capped.LeaseDuration > 60 {
		t.Errorf("lease_duration = %d, want at most the 60 s left", capped.LeaseDuration)
	}
	if len(capped.Warnings) != 1 {
		t.Errorf("warnings = %q, want the max_ttl capping warning", capped.Warnings)
	}
}
