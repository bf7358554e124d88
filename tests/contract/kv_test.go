package contract

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/openbao/openbao/api/v2"
)

func TestKV2ReadField(t *testing.T) {
	t.Parallel()
	secret, err := login(t, payments).Logical().ReadWithContext(context.Background(), fx.kvMount+"/data/payments/db")
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if secret == nil {
		t.Fatal("read: not found")
	}
	data, _ := secret.Data["data"].(map[string]any)
	if got := data["username"]; got != "app-payments" {
		t.Errorf("data.username = %v, want app-payments", got)
	}
	meta, _ := secret.Data["metadata"].(map[string]any)
	if got := meta["version"]; got != json.Number("1") {
		t.Errorf("metadata.version = %v, want 1", got)
	}
	if got := meta["deletion_time"]; got != "" {
		t.Errorf("metadata.deletion_time = %v, want empty", got)
	}
	if secret.LeaseID != "" || secret.LeaseDuration != 0 || secret.Renewable {
		t.Errorf("KV secret has a lease (%q, %d, %v), want none", secret.LeaseID, secret.LeaseDuration, secret.Renewable)
	}
}

func TestKV2ReadMissing(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := login(t, payments)

	secret, err := c.Logical().ReadWithContext(ctx, fx.kvMount+"/data/payments/nosuch")
	if err != nil || secret != nil {
		t.Errorf("Logical().Read of a missing path = (%v, %v), want (nil, nil)", secret, err)
	}

	resp, err := c.Logical().ReadRawWithContext(ctx, fx.kvMount+"/data/payments/nosuch")
	if resp != nil {
		resp.Body.Close()
	}
	wantResponseError(t, err, http.StatusNotFound)
}

func TestKV2List(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := login(t, payments)

	secret, err := c.Logical().ListWithContext(ctx, fx.kvMount+"/metadata/payments/")
	if err != nil {
		t.Fatalf("list: %v", err)
	}
	if secret == nil {
		t.Fatal("list: not found")
	}
	if diff := cmp.Diff([]any{"api/", "db"}, secret.Data["keys"]); diff != "" {
		t.Errorf("keys mismatch (-want +got):\n%s", diff)
	}

	missing, err := c.Logical().ListWithContext(ctx, fx.kvMount+"/metadata/payments/nosuch/")
	if err != nil || missing != nil {
		t.Errorf("list of a missing folder = (%v, %v), want (nil, nil)", missing, err)
	}
	_, err = rawList(ctx, c, fx.kvMount+"/metadata/payments/nosuch/")
	wantResponseError(t, err, http.StatusNotFound)
}

// rawList sends a LIST request, as the recordings show OpenBao's CLI does.
func rawList(ctx context.Context, c *api.Client, path string) (*api.Response, error) {
	r := c.NewRequest("LIST", "/v1/"+path)
	//nolint:staticcheck // RawRequestWithContext is the only way to send LIST.
	resp, err := c.RawRequestWithContext(ctx, r)
	if resp != nil {
		resp.Body.Close()
	}
	return resp, err
}

func TestKV2Metadata(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	c := login(t, payments)

	secret, err := c.Logical().ReadWithContext(ctx, fx.kvMount+"/metadata/payments/db")
	if err != nil {
		t.Fatalf("read metadata: %v", err)
	}
	if secret == nil {
		t.Fatal("read metadata: not found")
	}
	if got := secret.Data["current_version"]; got != json.Number("1") {
		t.Errorf("current_version = %v, want 1", got)
	}
	versions, _ := secret.Data["versions"].(map[string]any)
	if _, ok := versions["1"]; !ok || len(versions) != 1 {
		t.Errorf("versions = %v, want just version 1", versions)
	}
	for _, key := range []string{"created_time", "updated_time", "oldest_version", "max_versions", "cas_required", "custom_metadata"} {
		if _, ok := secret.Data[key]; !ok {
			t.Errorf("metadata lacks %q", key)
		}
	}
}

func TestKV2WriteAsAdmin(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	root := rootClient(t)
	path := fx.kvMount + "/data/admin/rotating"

	for version := 1; version <= 2; version++ {
		secret, err := root.Logical().WriteWithContext(ctx, path, map[string]any{"data": map[string]any{"v": version}})
		if err != nil {
			t.Fatalf("write version %d: %v", version, err)
		}
		if got := secret.Data["version"]; got != json.Number(jsonInt(version)) {
			t.Errorf("write returned version %v, want %d", got, version)
		}
	}

	_, err := root.Logical().WriteWithContext(ctx, path, map[string]any{"data": map[string]any{"v": 3}, "options": map[string]any{"cas": 1}})
	wantResponseError(t, err, http.StatusBadRequest, "check-and-set parameter did not match the current version")

	old, err := root.Logical().ReadWithDataWithContext(ctx, path, map[string][]string{"version": {"1"}})
	if err != nil || old == nil {
		t.Fatalf("read version 1: (%v, %v)", old, err)
	}
	if data, _ := old.Data["data"].(map[string]any); data["v"] != json.Number("1") {
		t.Errorf("version 1 data = %v, want v=1", data)
	}

	_, err = root.Logical().WriteWithContext(ctx, path, map[string]any{"options": map[string]any{}})
	wantResponseError(t, err, http.StatusBadRequest, "no data provided")
}

func TestKV2TenantCannotWrite(t *testing.T) {
	t.Parallel()
	_, err := login(t, payments).Logical().WriteWithContext(context.Background(), fx.kvMount+"/data/payments/db",
		map[string]any{"data": map[string]any{"password": "overwritten"}})
	wantResponseError(t, err, http.StatusForbidden, "1 error occurred:\n\t* permission denied\n\n")
}

func TestKV2SoftDelete(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	root := rootClient(t)
	path := fx.kvMount + "/data/admin/deleted"
	if _, err := root.Logical().WriteWithContext(ctx, path, map[string]any{"data": map[string]any{"k": "v"}}); err != nil {
		t.Fatalf("write: %v", err)
	}
	if _, err := root.Logical().DeleteWithContext(ctx, path); err != nil {
		t.Fatalf("delete: %v", err)
	}

	// Reading a deleted version returns 404 with its metadata, which the
	// client turns into a secret with null data.
	secret, err := root.Logical().ReadWithContext(ctx, path)
	if err != nil {
		t.Fatalf("read deleted: %v", err)
	}
	if secret == nil {
		t.Fatal("read deleted: nil secret, want metadata")
	}
	if secret.Data["data"] != nil {
		t.Errorf("data = %v, want null", secret.Data["data"])
	}
	meta, _ := secret.Data["metadata"].(map[string]any)
	if meta["deletion_time"] == "" {
		t.Error("metadata.deletion_time is empty, want the deletion time")
	}
}

func jsonInt(n int) string {
	raw, _ := json.Marshal(n)
	return string(raw)
}
