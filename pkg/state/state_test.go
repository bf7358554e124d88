package state

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestStoreRoundTrip(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	gid := int64(2000)
	at := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	want := &Record{
		VolumeID: "csi-1", Target: "/var/lib/kubelet/pods/u/volumes/kubernetes.io~csi/phantom/mount",
		Namespace: "payments", PodName: "api-0", PodUID: "u", ServiceAccount: "api", Role: "payments-api",
		Attributes: map[string]string{"secrets": "- path: payments/db"}, SpecHash: "abc", GID: &gid, MaxBytes: 1 << 20,
		Leases:      []Lease{{ID: "database/creds/app/x", Key: "database/creds/app", Issued: at, Expires: at.Add(time.Hour), TTL: time.Hour, Renewable: true}},
		RefreshedAt: at,
	}
	if err := s.Put(want); err != nil {
		t.Fatalf("Put() = %v", err)
	}
	if err := s.Put(&Record{VolumeID: "csi-2", Target: "/t2"}); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("csi-2"); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete("csi-2"); err != nil {
		t.Errorf("Delete() of a missing record = %v", err)
	}

	got, err := s.List()
	if err != nil {
		t.Fatalf("List() = %v", err)
	}
	if diff := cmp.Diff([]*Record{want}, got); diff != "" {
		t.Errorf("List() (-want +got):\n%s", diff)
	}
}

func TestListRemovesDamagedRecords(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Put(&Record{VolumeID: "good", Target: "/t"}); err != nil {
		t.Fatal(err)
	}
	for name, content := range map[string]string{
		"bad.json":      "{not json",
		"old.json":      `{"version": 99, "volume_id": "v", "target": "/t"}`,
		tmpPrefix + "1": "partial",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), fileMode); err != nil {
			t.Fatal(err)
		}
	}

	got, err := s.List()

	if len(got) != 1 || got[0].VolumeID != "good" {
		t.Errorf("List() = %v, want the good record only", got)
	}
	if err == nil || !strings.Contains(err.Error(), "bad.json") || !strings.Contains(err.Error(), "old.json") {
		t.Errorf("List() error = %v, want both damaged files named", err)
	}
	files, _ := os.ReadDir(dir)
	if len(files) != 1 {
		t.Errorf("directory holds %d files after List, want the good record only", len(files))
	}
}
