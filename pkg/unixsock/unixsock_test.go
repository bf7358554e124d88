package unixsock

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestListenReplacesStaleSocket(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "sub", "csi.sock")
	first, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	// Leave the socket file behind, as a killed daemon does.
	first.(interface{ SetUnlinkOnClose(bool) }).SetUnlinkOnClose(false)
	first.Close()

	second, err := Listen(path)
	if err != nil {
		t.Fatalf("Listen() over a stale socket = %v, want it replaced", err)
	}
	second.Close()
}

func TestListenRejectsLiveSocket(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "csi.sock")
	live, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()

	if _, err := Listen(path); !errors.Is(err, ErrInUse) {
		t.Fatalf("Listen() over a live socket = %v, want ErrInUse", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("live socket was removed: %v", err)
	}
}

func TestListenKeepsOtherFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "important")
	if err := os.WriteFile(file, []byte("data"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(file, link); err != nil {
		t.Fatal(err)
	}
	emptyDir := filepath.Join(dir, "empty")
	if err := os.Mkdir(emptyDir, 0o700); err != nil {
		t.Fatal(err)
	}

	for _, path := range []string{file, link, emptyDir} {
		if _, err := Listen(path); !errors.Is(err, ErrNotSocket) {
			t.Errorf("Listen(%s) = %v, want ErrNotSocket", filepath.Base(path), err)
		}
		if _, err := os.Lstat(path); err != nil {
			t.Errorf("%s was removed: %v", filepath.Base(path), err)
		}
	}
}
