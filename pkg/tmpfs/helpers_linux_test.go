package tmpfs

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
	"k8s.io/mount-utils"
)

// requireMountPrivilege skips the test unless the process may mount a tmpfs.
func requireMountPrivilege(tb testing.TB) {
	tb.Helper()
	if os.Geteuid() != 0 {
		tb.Skip("mounting tmpfs needs root; run the tests as root")
	}
	probe := tb.TempDir()
	if err := unix.Mount("phantom-probe", probe, "tmpfs", 0, "size=4k"); err != nil {
		if errors.Is(err, unix.EPERM) {
			tb.Skipf("mounting tmpfs is not permitted here (%v); run the tests with CAP_SYS_ADMIN", err)
		}
		tb.Fatalf("probe tmpfs mount at %s: %v", probe, err)
	}
	if err := unix.Unmount(probe, 0); err != nil {
		tb.Fatalf("unmount probe tmpfs at %s: %v", probe, err)
	}
}

// logBuffer collects log output of concurrent goroutines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// newTestMounter returns a Mounter that logs at Debug level into the
// returned buffer.
func newTestMounter(tb testing.TB) (*Mounter, *logBuffer) {
	tb.Helper()
	logs := &logBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	return NewMounter(logger), logs
}

// cleanupMounts unmounts every mount at path when the test ends. Register
// it after t.TempDir, so it runs before the directory is removed.
func cleanupMounts(tb testing.TB, path string) {
	tb.Helper()
	tb.Cleanup(func() {
		for range maxStackedMounts {
			if err := unix.Unmount(path, unix.MNT_DETACH); err != nil {
				return
			}
		}
	})
}

// mountVolume mounts a Phantom tmpfs at a new target below t.TempDir and
// unmounts it when the test ends.
func mountVolume(tb testing.TB, m *Mounter, opts MountOptions) string {
	tb.Helper()
	target := filepath.Join(tb.TempDir(), "volume")
	cleanupMounts(tb, target)
	created, err := m.Mount(target, opts)
	if err != nil {
		tb.Fatalf("Mount(%s) = %v", target, err)
	}
	if !created {
		tb.Fatalf("Mount(%s) created = false on a new target, want true", target)
	}
	return target
}

// bindMount bind-mounts source at a new directory, read-only when readOnly
// is set, the way a container runtime exposes a volume to a container.
func bindMount(tb testing.TB, source string, readOnly bool) string {
	tb.Helper()
	view := filepath.Join(tb.TempDir(), "container-view")
	if err := os.Mkdir(view, 0o700); err != nil {
		tb.Fatal(err)
	}
	cleanupMounts(tb, view)
	if err := unix.Mount(source, view, "", unix.MS_BIND, ""); err != nil {
		tb.Fatalf("bind-mount %s at %s: %v", source, view, err)
	}
	if readOnly {
		if err := unix.Mount("", view, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
			tb.Fatalf("remount %s read-only: %v", view, err)
		}
	}
	return view
}

// mountsAt returns the mountinfo entries whose mount point is path.
func mountsAt(tb testing.TB, path string) []mount.MountInfo {
	tb.Helper()
	infos, err := mount.ParseMountInfo(mountInfoPath)
	if err != nil {
		tb.Fatalf("parse mountinfo: %v", err)
	}
	var found []mount.MountInfo
	for _, info := range infos {
		if unescapeMountPath(info.MountPoint) == path {
			found = append(found, info)
		}
	}
	return found
}

// onlyMountAt returns the single mountinfo entry at path and fails the test
// when there is none or more than one.
func onlyMountAt(tb testing.TB, path string) mount.MountInfo {
	tb.Helper()
	found := mountsAt(tb, path)
	if len(found) != 1 {
		tb.Fatalf("mountinfo has %d entries at %s, want 1: %+v", len(found), path, found)
	}
	return found[0]
}

// rootEntries lists the names in the volume root, sorted.
func rootEntries(tb testing.TB, target string) []string {
	tb.Helper()
	entries, err := os.ReadDir(target)
	if err != nil {
		tb.Fatalf("list %s: %v", target, err)
	}
	var names []string
	for _, entry := range entries {
		names = append(names, entry.Name())
	}
	slices.Sort(names)
	return names
}

// contentDirs returns the content directories ("..<timestamp>.<random>") in
// the volume root.
func contentDirs(tb testing.TB, target string) []string {
	tb.Helper()
	var dirs []string
	for _, name := range rootEntries(tb, target) {
		if isContentDirName(name) {
			dirs = append(dirs, name)
		}
	}
	return dirs
}

func hasOption(options []string, want string) bool {
	return slices.Contains(options, want)
}

func int64Ptr(v int64) *int64 { return &v }

// readTree reads every regular file below dir, following the top-level
// links, keyed by path relative to dir. Names starting with ".." are skipped.
func readTree(tb testing.TB, dir string) map[string]string {
	tb.Helper()
	got := map[string]string{}
	var walk func(rel string)
	walk = func(rel string) {
		entries, err := os.ReadDir(filepath.Join(dir, rel))
		if err != nil {
			tb.Fatalf("list %s: %v", filepath.Join(dir, rel), err)
		}
		for _, entry := range entries {
			if strings.HasPrefix(entry.Name(), "..") {
				continue
			}
			p := filepath.Join(rel, entry.Name())
			info, err := os.Stat(filepath.Join(dir, p))
			if err != nil {
				tb.Fatalf("stat %s: %v", p, err)
			}
			if info.IsDir() {
				walk(p)
				continue
			}
			data, err := os.ReadFile(filepath.Join(dir, p))
			if err != nil {
				tb.Fatalf("read %s: %v", p, err)
			}
			got[p] = string(data)
		}
	}
	walk("")
	return got
}
