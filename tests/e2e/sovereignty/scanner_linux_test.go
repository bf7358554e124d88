package sovereignty

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

func TestScanTreeSkipsTmpfs(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root")
	}
	secret := randomValue(t)
	root := t.TempDir()
	memory := filepath.Join(root, "volume")
	if err := os.Mkdir(memory, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("sovereignty-test", memory, "tmpfs", 0, "size=64k"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(memory, 0); err != nil {
			t.Errorf("unmount %s: %v", memory, err)
		}
	})
	mustWrite(t, filepath.Join(memory, "password"), secret)
	mustWrite(t, filepath.Join(root, "disk.txt"), []byte("on disk\n"))

	s, err := NewScanner([]Value{{Label: "secret", Data: secret}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ScanTree(root); err != nil {
		t.Fatal(err)
	}

	r := s.Report()
	if hits := r.SecretHits(); len(hits) != 0 {
		t.Errorf("secret found inside a tmpfs: %v", hits)
	}
	if r.Files != 1 {
		t.Errorf("Files = %d, want 1 (the file on disk only)", r.Files)
	}
	want := []SkippedMount{{Path: memory, FSType: "tmpfs", Reason: "memory-backed"}}
	if diff := cmp.Diff(want, r.Skipped); diff != "" {
		t.Errorf("skipped mounts (-want +got):\n%s", diff)
	}
}
