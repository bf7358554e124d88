package contract

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/openbao/openbao/api/v2"
)

// requireDatabase skips t when the target cannot issue database
// credentials.
func requireDatabase(t *testing.T) {
	t.Helper()
	if !fx.database {
		t.Skipf("no database engine: set %s to a PostgreSQL connection_url the OpenBao at %s can reach", envPostgres, tg.addr)
	}
}

// dbCreds reads database credentials as a tenant.
func dbCreds(t *testing.T, c *api.Client) *api.Secret {
	t.Helper()
	secret, err := c.Logical().ReadWithContext(context.Background(), fx.dbMount+"/creds/app")
	if err != nil {
		t.Fatalf("read database creds: %v", err)
	}
	if secret == nil {
		t.Fatal("read database creds: not found")
	}
	return secret
}

func TestDatabaseCreds(t *testing.T) {
	requireDatabase(t)
	t.Parallel()
	secret := dbCreds(t, login(t, payments))

	if !strings.HasPrefix(secret.LeaseID, fx.dbMount+"/creds/app/") {
		t.Errorf("lease_id = %q, want prefix %s/creds/app/", secret.LeaseID, fx.dbMount)
	}
	if !secret.Renewable {
		t.Error("renewable = false, want true")
	}
	if secret.LeaseDuration != int(dbDefaultTTL/time.Second) {
		t.Errorf("lease_duration = %d, want %d", secret.LeaseDuration, int(dbDefaultTTL/time.Second))
	}
	username, _ := secret.Data["username"].(string)
	password, _ := secret.Data["password"].(string)
	if !strings.HasPrefix(username, "v-") || len(password) < 20 {
		t.Errorf("username %q does not start with v- or the password is shorter than 20 characters", username)
	}
}

func TestLeaseRenewRevoke(t *testing.T) {
	requireDatabase(t)
	t.Parallel()
	ctx := context.Background()
	c := login(t, payments)
	id := dbCreds(t, c).LeaseID

	renewed, err := c.Sys().RenewWithContext(ctx, id, 60)
	if err != nil {
		t.Fatalf("renew: %v", err)
	}
	if renewed.LeaseID != id || renewed.LeaseDuration != 60 || !renewed.Renewable {
		t.Errorf("renew = (%q, %d, %v), want (%q, 60, true)", renewed.LeaseID, renewed.LeaseDuration, renewed.Renewable, id)
	}
	if len(renewed.Warnings) != 0 {
		t.Errorf("warnings = %q, want none", renewed.Warnings)
	}

	// max_ttl is six minutes from issue, so an hour is capped with a warning.
	capped, err := c.Sys().RenewWithContext(ctx, id, 3600)
	if err != nil {
		t.Fatalf("renew past max_ttl: %v", err)
	}
	if d := capped.LeaseDuration; d <= 0 || d > int(dbMaxTTL/time.Second) {
		t.Errorf("lease_duration = %d, want capped at %d", d, int(dbMaxTTL/time.Second))
	}
	if len(capped.Warnings) != 1 || !strings.HasPrefix(capped.Warnings[0], `TTL of "1h" exceeded the effective max_ttl of "`) ||
		!strings.HasSuffix(capped.Warnings[0], `"; TTL value is capped accordingly`) {
		t.Errorf("warnings = %q, want the max_ttl capping warning", capped.Warnings)
	}

	lookup, err := rootClient(t).Sys().LookupWithContext(ctx, id)
	if err != nil {
		t.Fatalf("lookup: %v", err)
	}
	if lookup.Data["id"] != id || lookup.Data["path"] != fx.dbMount+"/creds/app" || lookup.Data["renewable"] != true {
		t.Errorf("lookup data = %v, want id, path and renewable", lookup.Data)
	}
	if lookup.Data["last_renewal"] == nil {
		t.Error("lookup: last_renewal is null after a renewal")
	}

	if err := c.Sys().RevokeWithContext(ctx, id); err != nil {
		t.Fatalf("revoke: %v", err)
	}
	_, err = c.Sys().RenewWithContext(ctx, id, 60)
	wantResponseError(t, err, http.StatusBadRequest, "lease not found")

	_, err = rootClient(t).Sys().LookupWithContext(ctx, id)
	wantResponseError(t, err, http.StatusBadRequest, "invalid lease")
}

func TestLeaseErrors(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := login(t, payments)

	_, err := c.Sys().RenewWithContext(ctx, fx.dbMount+"/creds/app/nosuch", 60)
	wantResponseError(t, err, http.StatusBadRequest, "lease not found")

	_, err = c.Sys().RenewWithContext(ctx, "", 60)
	wantResponseError(t, err, http.StatusBadRequest, "lease_id must be specified")

	// Revoking an unknown lease succeeds, as OpenBao does not reveal
	// whether a lease exists.
	if err := c.Sys().RevokeWithContext(ctx, fx.dbMount+"/creds/app/nosuch"); err != nil {
		t.Errorf("revoke unknown lease: %v", err)
	}
}

// TestLeaseRevokedWithToken checks that revoking a token revokes its leases.
func TestLeaseRevokedWithToken(t *testing.T) {
	requireDatabase(t)
	t.Parallel()
	ctx := context.Background()
	c := login(t, payments)
	id := dbCreds(t, c).LeaseID

	if err := c.Auth().Token().RevokeSelfWithContext(ctx, ""); err != nil {
		t.Fatalf("revoke-self: %v", err)
	}

	// OpenBao marks the token's leases expired at once and deletes them
	// shortly after, so a renewal meets either state.
	_, err := rootClient(t).Sys().RenewWithContext(ctx, id, 60)
	respErr := responseError(t, err)
	if respErr.StatusCode != http.StatusBadRequest {
		t.Errorf("status = %d, want 400", respErr.StatusCode)
	}
	if msg := strings.Join(respErr.Errors, ""); msg != "lease not found" && msg != "lease expired" {
		t.Errorf("errors = %q, want lease not found or lease expired", respErr.Errors)
	}
}
