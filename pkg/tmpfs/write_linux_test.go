package tmpfs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/sys/unix"
)

// contentDirPattern matches the names writeDataDir gives content directories.
var contentDirPattern = regexp.MustCompile(`^\.\.\d{4}_\d{2}_\d{2}_\d{2}_\d{2}_\d{2}\.\d{9}\.\d+$`)

func TestWriteCreatesLayout(t *testing.T) {
	requireMountPrivilege(t)
	m, _ := newTestMounter(t)
	target := mountVolume(t, m, MountOptions{SizeBytes: 1 << 20, GID: int64Ptr(1234)})
	files := []File{
		{Path: "password", Data: []byte("p1"), Mode: 0o400},
		{Path: "tls/tls.crt", Data: []byte("cert")},
		{Path: "tls/ca/root.pem", Data: []byte("root"), Mode: 0o444},
	}

	changed, err := Write(target, files, WriteOptions{GID: int64Ptr(1234), MaxBytes: 1 << 10})
	if err != nil || !changed {
		t.Fatalf("Write() = %t, %v, want true, nil", changed, err)
	}

	want := map[string]string{"password": "p1", "tls/tls.crt": "cert", "tls/ca/root.pem": "root"}
	if diff := cmp.Diff(want, readTree(t, target)); diff != "" {
		t.Errorf("volume content mismatch (-want +got):\n%s", diff)
	}
	dirs := contentDirs(t, target)
	if len(dirs) != 1 || !contentDirPattern.MatchString(dirs[0]) {
		t.Fatalf("content directories = %q, want one matching %s", dirs, contentDirPattern)
	}
	if diff := cmp.Diff([]string{dirs[0], "..data", "password", "tls"}, rootEntries(t, target)); diff != "" {
		t.Errorf("root entries mismatch (-want +got):\n%s", diff)
	}
	assertLink(t, filepath.Join(target, "..data"), dirs[0])
	assertLink(t, filepath.Join(target, "password"), "..data/password")
	assertLink(t, filepath.Join(target, "tls"), "..data/tls")

	data := filepath.Join(target, "..data")
	assertOwnerMode(t, filepath.Join(data, "password"), 1234, 0o400)
	assertOwnerMode(t, filepath.Join(data, "tls/tls.crt"), 1234, 0o440)
	assertOwnerMode(t, filepath.Join(data, "tls/ca/root.pem"), 1234, 0o444)
	assertOwnerMode(t, filepath.Join(target, dirs[0]), 1234, 0o550)
	assertOwnerMode(t, filepath.Join(data, "tls"), 1234, 0o550)
	assertOwnerMode(t, filepath.Join(data, "tls/ca"), 1234, 0o550)
}

func TestWriteUnchangedTouchesNothing(t *testing.T) {
	requireMountPrivilege(t)
	m, _ := newTestMounter(t)
	target := mountVolume(t, m, MountOptions{SizeBytes: 1 << 20})
	files := []File{{Path: "a", Data: []byte("1")}, {Path: "d/b", Data: []byte("2")}}
	opts := WriteOptions{GID: int64Ptr(1234), MaxBytes: 1 << 10}
	if _, err := Write(target, files, opts); err != nil {
		t.Fatal(err)
	}
	before := contentDirs(t, target)

	// The same files in another order are the same content.
	reordered := []File{files[1], files[0]}
	changed, err := Write(target, reordered, opts)
	if err != nil || changed {
		t.Fatalf("Write(same content) = %t, %v, want false, nil", changed, err)
	}
	if diff := cmp.Diff(before, contentDirs(t, target)); diff != "" {
		t.Errorf("content directory changed on unchanged Write (-want +got):\n%s", diff)
	}

	tests := []struct {
		name  string
		files []File
		opts  WriteOptions
	}{
		{name: "data", files: []File{{Path: "a", Data: []byte("X")}, files[1]}, opts: opts},
		{name: "mode", files: []File{{Path: "a", Data: []byte("X"), Mode: 0o400}, files[1]}, opts: opts},
		{name: "group", files: []File{{Path: "a", Data: []byte("X"), Mode: 0o400}, files[1]}, opts: WriteOptions{GID: int64Ptr(99), MaxBytes: 1 << 10}},
		{name: "extra file", files: []File{{Path: "a", Data: []byte("X"), Mode: 0o400}, files[1], {Path: "d/c"}}, opts: WriteOptions{GID: int64Ptr(99), MaxBytes: 1 << 10}},
	}
	for _, tt := range tests {
		previous := readLink(t, filepath.Join(target, "..data"))
		changed, err := write(target, tt.files, tt.opts, 0)
		if err != nil || !changed {
			t.Errorf("write(changed %s, no grace) = %t, %v, want true, nil", tt.name, changed, err)
		}
		current := readLink(t, filepath.Join(target, "..data"))
		if current == previous {
			t.Errorf("write(changed %s) kept ..data at %s, want a new directory", tt.name, current)
		}
		if diff := cmp.Diff([]string{current}, contentDirs(t, target)); diff != "" {
			t.Errorf("content directories after write(changed %s) (-want +got):\n%s", tt.name, diff)
		}
	}
}

func TestWriteRemovesStaleNames(t *testing.T) {
	requireMountPrivilege(t)
	m, _ := newTestMounter(t)
	target := mountVolume(t, m, MountOptions{SizeBytes: 1 << 20})
	opts := WriteOptions{MaxBytes: 1 << 10}
	first := []File{{Path: "a", Data: []byte("a")}, {Path: "b", Data: []byte("b")}, {Path: "d/x", Data: []byte("x")}}
	if _, err := Write(target, first, opts); err != nil {
		t.Fatal(err)
	}
	oldDir := contentDirs(t, target)[0]

	second := []File{{Path: "b", Data: []byte("b2")}, {Path: "c", Data: []byte("c")}}
	if changed, err := Write(target, second, opts); err != nil || !changed {
		t.Fatalf("Write(second) = %t, %v, want true, nil", changed, err)
	}

	if diff := cmp.Diff(map[string]string{"b": "b2", "c": "c"}, readTree(t, target)); diff != "" {
		t.Errorf("volume content mismatch (-want +got):\n%s", diff)
	}
	newDir := readLink(t, filepath.Join(target, "..data"))
	if diff := cmp.Diff([]string{oldDir, newDir, "..data", "b", "c"}, rootEntries(t, target)); diff != "" {
		t.Errorf("root entries mismatch (-want +got):\n%s", diff)
	}

	// Once the grace has passed, the replaced directory goes as well.
	if changed, err := write(target, second, opts, 0); err != nil || changed {
		t.Fatalf("write(second again, no grace) = %t, %v, want false, nil", changed, err)
	}
	if diff := cmp.Diff([]string{newDir, "..data", "b", "c"}, rootEntries(t, target)); diff != "" {
		t.Errorf("root entries after the grace mismatch (-want +got):\n%s", diff)
	}
}

func TestWriteWithoutGraceKeepsOneDirectory(t *testing.T) {
	requireMountPrivilege(t)
	m, _ := newTestMounter(t)
	target := mountVolume(t, m, MountOptions{SizeBytes: 1 << 20})

	for i := range 3 {
		files := []File{{Path: "a", Data: fmt.Appendf(nil, "v%d", i)}}
		if changed, err := write(target, files, WriteOptions{MaxBytes: 10}, 0); err != nil || !changed {
			t.Fatalf("write(v%d, no grace) = %t, %v, want true, nil", i, changed, err)
		}
		current := readLink(t, filepath.Join(target, "..data"))
		if diff := cmp.Diff([]string{current, "..data", "a"}, rootEntries(t, target)); diff != "" {
			t.Errorf("root entries after write(v%d) (-want +got):\n%s", i, diff)
		}
	}
}

func TestWriteKeepsReplacedDirectoriesWithinGrace(t *testing.T) {
	requireMountPrivilege(t)
	m, _ := newTestMounter(t)
	target := mountVolume(t, m, MountOptions{SizeBytes: 1 << 20})

	var published []string
	for i := range 4 {
		files := []File{{Path: "a", Data: fmt.Appendf(nil, "v%d", i)}}
		if changed, err := Write(target, files, WriteOptions{MaxBytes: 10}); err != nil || !changed {
			t.Fatalf("Write(v%d) = %t, %v, want true, nil", i, changed, err)
		}
		published = append(published, readLink(t, filepath.Join(target, "..data")))
	}

	if diff := cmp.Diff(published, contentDirs(t, target)); diff != "" {
		t.Errorf("content directories within the grace (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"a": "v3"}, readTree(t, target)); diff != "" {
		t.Errorf("volume content mismatch (-want +got):\n%s", diff)
	}
}

func TestWriteRemovesYoungDirectoriesWhenFull(t *testing.T) {
	requireMountPrivilege(t)
	m, logs := newTestMounter(t)
	target := mountVolume(t, m, MountOptions{SizeBytes: 64 << 10})
	opts := WriteOptions{MaxBytes: 1 << 20, Logger: m.logger}

	var published []string
	for _, fill := range []byte{'1', '2', '3'} {
		files := []File{{Path: "a", Data: bytes.Repeat([]byte{fill}, 24<<10)}}
		if changed, err := Write(target, files, opts); err != nil || !changed {
			t.Fatalf("Write(%c) = %t, %v, want true, nil", fill, changed, err)
		}
		published = append(published, readLink(t, filepath.Join(target, "..data")))
	}

	// Three copies of 24 KiB do not fit into 64 KiB, so the first one had
	// to go before its grace ended.
	if diff := cmp.Diff(published[1:], contentDirs(t, target)); diff != "" {
		t.Errorf("content directories (-want +got):\n%s", diff)
	}
	if got := readTree(t, target)["a"]; got != strings.Repeat("3", 24<<10) {
		t.Errorf("file a contains %d bytes starting %q, want the third version", len(got), got[:min(len(got), 8)])
	}
	if !strings.Contains(logs.String(), "tmpfs is full") {
		t.Errorf("logs lack the warning about the early removal:\n%s", logs)
	}
}

func TestStaleEntries(t *testing.T) {
	requireMountPrivilege(t)
	m, _ := newTestMounter(t)
	target := mountVolume(t, m, MountOptions{SizeBytes: 1 << 20})
	if _, err := Write(target, []File{{Path: "a", Data: []byte("v1")}}, WriteOptions{MaxBytes: 10}); err != nil {
		t.Fatal(err)
	}
	replaced := readLink(t, filepath.Join(target, "..data"))
	if _, err := Write(target, []File{{Path: "a", Data: []byte("v2")}}, WriteOptions{MaxBytes: 10}); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(filepath.Join(target, replaced))
	if err != nil {
		t.Fatal(err)
	}
	replacedAt := info.ModTime()
	if err := os.Symlink(replaced, filepath.Join(target, "..data_tmp")); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name string
		now  time.Time
		want []string
	}{
		{name: "within the grace", now: replacedAt.Add(SupersededGrace - time.Millisecond), want: []string{"..data_tmp"}},
		{name: "grace passed", now: replacedAt.Add(SupersededGrace), want: []string{replaced, "..data_tmp"}},
		{name: "clock set back", now: replacedAt.Add(-time.Hour), want: []string{replaced, "..data_tmp"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := staleEntries(target, SupersededGrace, tt.now)
			if err != nil {
				t.Fatalf("staleEntries() = %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("staleEntries() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWriteFilesPrunesAfterGrace(t *testing.T) {
	requireMountPrivilege(t)
	m, _ := newTestMounter(t)
	m.grace = 50 * time.Millisecond
	target := mountVolume(t, m, MountOptions{SizeBytes: 1 << 20, ReadOnly: true})
	opts := WriteOptions{MaxBytes: 10}

	for _, data := range []string{"v1", "v2"} {
		if _, err := m.WriteFiles(target, []File{{Path: "a", Data: []byte(data)}}, opts, true); err != nil {
			t.Fatalf("WriteFiles(%s) = %v", data, err)
		}
	}
	current := readLink(t, filepath.Join(target, "..data"))

	deadline := time.Now().Add(10 * time.Second)
	for len(contentDirs(t, target)) > 1 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if diff := cmp.Diff([]string{current, "..data", "a"}, rootEntries(t, target)); diff != "" {
		t.Errorf("root entries after the grace (-want +got):\n%s", diff)
	}
	if !hasOption(onlyMountAt(t, target).MountOptions, "ro") {
		t.Error("mount point is writable after the removal, want read-only")
	}
}

func TestWriteEmptyFileList(t *testing.T) {
	requireMountPrivilege(t)
	m, _ := newTestMounter(t)
	target := mountVolume(t, m, MountOptions{SizeBytes: 1 << 20})
	opts := WriteOptions{MaxBytes: 1 << 10}
	if _, err := Write(target, []File{{Path: "a", Data: []byte("a")}}, opts); err != nil {
		t.Fatal(err)
	}

	changed, err := Write(target, nil, opts)
	if err != nil || !changed {
		t.Fatalf("Write(no files) = %t, %v, want true, nil", changed, err)
	}
	if got := readTree(t, target); len(got) != 0 {
		t.Errorf("volume content = %v, want empty", got)
	}
	if changed, err := Write(target, nil, opts); err != nil || changed {
		t.Errorf("second Write(no files) = %t, %v, want false, nil", changed, err)
	}
}

func TestWriteRepairsAfterCrash(t *testing.T) {
	requireMountPrivilege(t)
	m, _ := newTestMounter(t)
	target := mountVolume(t, m, MountOptions{SizeBytes: 1 << 20})
	files := []File{{Path: "a", Data: []byte("a")}, {Path: "b", Data: []byte("b")}}
	opts := WriteOptions{MaxBytes: 1 << 10}
	if _, err := Write(target, files, opts); err != nil {
		t.Fatal(err)
	}
	current := contentDirs(t, target)[0]

	// Leave what a crash between the steps of a Write could leave: a
	// missing link, a half-written content directory, a stray ..data_tmp
	// and a link for a name that is no longer present.
	if err := os.Remove(filepath.Join(target, "a")); err != nil {
		t.Fatal(err)
	}
	leftover := filepath.Join(target, "..2020_01_01_00_00_00.000000000.123")
	if err := os.MkdirAll(filepath.Join(leftover, "sub"), 0o700); err != nil {
		t.Fatal(err)
	}
	crashedAt := time.Now().Add(-time.Minute)
	if err := os.Chtimes(leftover, crashedAt, crashedAt); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(filepath.Base(leftover), filepath.Join(target, "..data_tmp")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("..data/gone", filepath.Join(target, "gone")); err != nil {
		t.Fatal(err)
	}

	changed, err := Write(target, files, opts)
	if err != nil || changed {
		t.Fatalf("Write(same content) = %t, %v, want false, nil", changed, err)
	}
	if diff := cmp.Diff([]string{current, "..data", "a", "b"}, rootEntries(t, target)); diff != "" {
		t.Errorf("root entries mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(map[string]string{"a": "a", "b": "b"}, readTree(t, target)); diff != "" {
		t.Errorf("volume content mismatch (-want +got):\n%s", diff)
	}
}

func TestWriteLeavesForeignEntries(t *testing.T) {
	requireMountPrivilege(t)
	m, logs := newTestMounter(t)
	target := mountVolume(t, m, MountOptions{SizeBytes: 1 << 20})
	if err := os.WriteFile(filepath.Join(target, "foreign"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}

	if _, err := m.WriteFiles(target, []File{{Path: "a", Data: []byte("a")}}, WriteOptions{MaxBytes: 10}, false); err != nil {
		t.Fatalf("WriteFiles() = %v", err)
	}
	if _, err := os.Stat(filepath.Join(target, "foreign")); err != nil {
		t.Errorf("foreign entry removed: %v", err)
	}
	if !strings.Contains(logs.String(), "name=foreign") {
		t.Errorf("logs do not name the foreign entry:\n%s", logs)
	}
}

func TestWriteRejectsInvalidInputAndKeepsContent(t *testing.T) {
	requireMountPrivilege(t)
	m, _ := newTestMounter(t)
	target := mountVolume(t, m, MountOptions{SizeBytes: 1 << 20})
	opts := WriteOptions{MaxBytes: 8}
	if _, err := Write(target, []File{{Path: "a", Data: []byte("old")}}, opts); err != nil {
		t.Fatal(err)
	}
	entriesBefore := rootEntries(t, target)

	tests := []struct {
		name   string
		files  []File
		opts   WriteOptions
		wantIs error
	}{
		{name: "invalid path", files: []File{{Path: "b", Data: []byte("new")}, {Path: "../escape"}}, opts: opts, wantIs: ErrInvalidPath},
		{name: "too large", files: []File{{Path: "a", Data: []byte("123456789")}}, opts: opts, wantIs: ErrTooLarge},
		{name: "invalid mode", files: []File{{Path: "a", Mode: os.ModeDir | 0o755}}, opts: opts, wantIs: ErrInvalidMode},
		{name: "invalid gid", files: []File{{Path: "a"}}, opts: WriteOptions{MaxBytes: 8, GID: int64Ptr(-5)}, wantIs: ErrInvalidOptions},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			changed, err := Write(target, tt.files, tt.opts)
			if !errors.Is(err, tt.wantIs) || changed {
				t.Fatalf("Write() = %t, %v, want false and an error wrapping %v", changed, err, tt.wantIs)
			}
			if diff := cmp.Diff(entriesBefore, rootEntries(t, target)); diff != "" {
				t.Errorf("root entries changed by a rejected Write (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(map[string]string{"a": "old"}, readTree(t, target)); diff != "" {
				t.Errorf("content changed by a rejected Write (-want +got):\n%s", diff)
			}
		})
	}
}

func TestWriteFailureMidwayCleansUp(t *testing.T) {
	requireMountPrivilege(t)
	m, _ := newTestMounter(t)
	old := []File{{Path: "a", Data: []byte("old")}, {Path: "d/b", Data: []byte("old")}}
	wantOld := map[string]string{"a": "old", "d/b": "old"}

	t.Run("tmpfs full", func(t *testing.T) {
		target := mountVolume(t, m, MountOptions{SizeBytes: 64 << 10})
		opts := WriteOptions{MaxBytes: 1 << 20}
		if _, err := Write(target, old, opts); err != nil {
			t.Fatal(err)
		}
		entriesBefore := rootEntries(t, target)

		big := []File{{Path: "a", Data: []byte("new")}, {Path: "fresh", Data: make([]byte, 32<<10)}, {Path: "z/big", Data: make([]byte, 48<<10)}}
		changed, err := Write(target, big, opts)
		if !errors.Is(err, unix.ENOSPC) || changed {
			t.Fatalf("Write(more than the tmpfs fits) = %t, %v, want false and ENOSPC", changed, err)
		}
		if diff := cmp.Diff(entriesBefore, rootEntries(t, target)); diff != "" {
			t.Errorf("root entries after the failed Write (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(wantOld, readTree(t, target)); diff != "" {
			t.Errorf("content after the failed Write (-want +got):\n%s", diff)
		}
	})

	t.Run("top-level name taken", func(t *testing.T) {
		target := mountVolume(t, m, MountOptions{SizeBytes: 1 << 20})
		opts := WriteOptions{MaxBytes: 1 << 10}
		if _, err := Write(target, old, opts); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(filepath.Join(target, "taken"), 0o700); err != nil {
			t.Fatal(err)
		}
		entriesBefore := rootEntries(t, target)

		// "fresh" sorts before "taken", so its link exists when the
		// conflict is found and the rollback has to remove it.
		files := []File{{Path: "a", Data: []byte("new")}, {Path: "fresh", Data: []byte("f")}, {Path: "taken", Data: []byte("t")}}
		changed, err := Write(target, files, opts)
		if err == nil || changed || !strings.Contains(err.Error(), "link top-level name taken") {
			t.Fatalf("Write(name taken) = %t, %v, want false and an error naming the link", changed, err)
		}
		if diff := cmp.Diff(entriesBefore, rootEntries(t, target)); diff != "" {
			t.Errorf("root entries after the failed Write (-want +got):\n%s", diff)
		}
		if diff := cmp.Diff(wantOld, readTree(t, target)); diff != "" {
			t.Errorf("content after the failed Write (-want +got):\n%s", diff)
		}
	})
}

func TestWriteLargeValue(t *testing.T) {
	requireMountPrivilege(t)
	m, _ := newTestMounter(t)
	const value = 5 << 20
	const limit = 6 << 20
	target := mountVolume(t, m, MountOptions{SizeBytes: MinMountSize(limit, 1)})

	for i, fill := range []byte{'x', 'y'} {
		data := bytes.Repeat([]byte{fill}, value)
		changed, err := Write(target, []File{{Path: "blob", Data: data}}, WriteOptions{MaxBytes: limit})
		if err != nil || !changed {
			t.Fatalf("Write(5 MiB) #%d = %t, %v, want true, nil", i+1, changed, err)
		}
		got, err := os.ReadFile(filepath.Join(target, "blob"))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read back 5 MiB value #%d: %d bytes, %v; want %d bytes of %q", i+1, len(got), err, value, fill)
		}
	}

	_, err := Write(target, []File{{Path: "blob", Data: make([]byte, value)}}, WriteOptions{MaxBytes: 4 << 20})
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Write(5 MiB, limit 4 MiB) = %v, want ErrTooLarge", err)
	}
	for _, number := range []string{"5242880", "4194304"} {
		if !strings.Contains(err.Error(), number) {
			t.Errorf("ErrTooLarge message %q does not contain %s", err, number)
		}
	}
}

func TestWriteRejectsNonTmpfs(t *testing.T) {
	requireMountPrivilege(t)
	dir := filepath.Join(t.TempDir(), "ramfs")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cleanupMounts(t, dir)
	// ramfs keeps the test off the disk while being a filesystem other
	// than tmpfs.
	if err := unix.Mount("phantom-test", dir, "ramfs", 0, ""); err != nil {
		t.Fatalf("mount ramfs: %v", err)
	}

	_, err := Write(dir, []File{{Path: "a", Data: []byte("x")}}, WriteOptions{MaxBytes: 10})
	if !errors.Is(err, ErrNotTmpfs) {
		t.Fatalf("Write(ramfs) = %v, want ErrNotTmpfs", err)
	}
	if entries := rootEntries(t, dir); len(entries) != 0 {
		t.Errorf("Write(ramfs) left entries %v", entries)
	}

	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Write(file, nil, WriteOptions{MaxBytes: 10}); !errors.Is(err, ErrNotDirectory) {
		t.Errorf("Write(file) = %v, want ErrNotDirectory", err)
	}
}

func TestWriteFilesReadOnlyRotation(t *testing.T) {
	requireMountPrivilege(t)
	m, _ := newTestMounter(t)
	target := mountVolume(t, m, MountOptions{SizeBytes: 1 << 20, ReadOnly: true, GID: int64Ptr(1234)})
	view := bindMount(t, target, true)
	opts := WriteOptions{GID: int64Ptr(1234), MaxBytes: 1 << 10}

	for i, version := range []string{"v1", "v2", "v3"} {
		files := []File{{Path: "token", Data: []byte(version)}, {Path: "conf/" + version, Data: []byte(version)}}
		changed, err := m.WriteFiles(target, files, opts, true)
		if err != nil || !changed {
			t.Fatalf("WriteFiles(%s) = %t, %v, want true, nil", version, changed, err)
		}
		want := map[string]string{"token": version, "conf/" + version: version}
		if diff := cmp.Diff(want, readTree(t, view)); diff != "" {
			t.Errorf("container view after rotation %d (-want +got):\n%s", i+1, diff)
		}
		if !hasOption(onlyMountAt(t, target).MountOptions, "ro") {
			t.Errorf("mount point is writable after WriteFiles(%s), want read-only", version)
		}
	}

	if _, err := m.WriteFiles(target, []File{{Path: "../x"}}, opts, true); !errors.Is(err, ErrInvalidPath) {
		t.Errorf("WriteFiles(invalid path) = %v, want ErrInvalidPath", err)
	}
	if !hasOption(onlyMountAt(t, target).MountOptions, "ro") {
		t.Error("mount point is writable after a failed WriteFiles, want read-only")
	}
	if _, err := m.WriteFiles(t.TempDir(), nil, opts, true); !errors.Is(err, ErrNotMounted) {
		t.Errorf("WriteFiles(not mounted) = %v, want ErrNotMounted", err)
	}
}

func TestWriteFilesKeepsWritableMountWritable(t *testing.T) {
	requireMountPrivilege(t)
	m, _ := newTestMounter(t)
	target := mountVolume(t, m, MountOptions{SizeBytes: 1 << 20})

	if _, err := m.WriteFiles(target, []File{{Path: "a"}}, WriteOptions{MaxBytes: 1}, false); err != nil {
		t.Fatal(err)
	}
	if !hasOption(onlyMountAt(t, target).MountOptions, "rw") {
		t.Error("mount point is read-only after WriteFiles(readOnly=false), want writable")
	}
}

// TestWriteAtomicUnderConcurrentReads rotates between two versions while a
// reader reads all files through a bind mount. Every read must return a
// complete file of one version, and all files read while "..data" kept
// pointing at one directory must be of that directory's version. The
// rotations all fall within SupersededGrace, which is the hardest case for
// readers in the middle of a lookup.
func TestWriteAtomicUnderConcurrentReads(t *testing.T) {
	requireMountPrivilege(t)
	m, logs := newTestMounter(t)
	const rotations = 150
	versions := [2][]File{atomicityFiles("A"), atomicityFiles("B")}
	// All replaced copies stay within the grace period, so the tmpfs has
	// room for one copy per rotation.
	target := mountVolume(t, m, MountOptions{SizeBytes: (rotations + 2) * MinMountSize(64<<10, 4) / 3, ReadOnly: true})
	view := bindMount(t, target, true)
	opts := WriteOptions{MaxBytes: 1 << 20}
	if _, err := m.WriteFiles(target, versions[0], opts, true); err != nil {
		t.Fatal(err)
	}

	var done atomic.Bool
	var wg sync.WaitGroup
	var consistent, snapshots int
	wg.Go(func() {
		for !done.Load() {
			snapshots++
			if checkSnapshot(t, view, versions) {
				consistent++
			}
		}
	})
	for i := range rotations {
		if _, err := m.WriteFiles(target, versions[(i+1)%2], opts, true); err != nil {
			t.Errorf("rotation %d: %v", i+1, err)
			break
		}
	}
	done.Store(true)
	wg.Wait()

	t.Logf("%d snapshots read, %d of them without a concurrent swap", snapshots, consistent)
	if consistent == 0 {
		t.Error("no snapshot was read without a concurrent swap, so version consistency went unchecked")
	}
	if strings.Contains(logs.String(), "tmpfs is full") {
		t.Errorf("replaced content was removed early, so the test did not check the grace:\n%s", logs)
	}
}

// atomicityFiles returns files whose content names the version, large
// enough that writing one takes more than one page.
func atomicityFiles(version string) []File {
	var files []File
	for _, p := range []string{"a", "b", "sub/c", "sub/deep/d"} {
		data := bytes.Repeat([]byte(version+":"+p+";"), 16<<10/len(version+":"+p+";"))
		files = append(files, File{Path: p, Data: data})
	}
	return files
}

// checkSnapshot reads every file of the volume through view and reports
// whether "..data" stayed the same during the read, in which case all files
// must have the same version.
func checkSnapshot(t *testing.T, view string, versions [2][]File) bool {
	before, err := os.Readlink(filepath.Join(view, "..data"))
	if err != nil {
		t.Errorf("read ..data: %v", err)
		return false
	}
	seen := map[int]bool{}
	for i, f := range versions[0] {
		data, err := os.ReadFile(filepath.Join(view, f.Path))
		if err != nil {
			t.Errorf("read %s during rotation: %v", f.Path, err)
			return false
		}
		switch {
		case bytes.Equal(data, f.Data):
			seen[0] = true
		case bytes.Equal(data, versions[1][i].Data):
			seen[1] = true
		default:
			t.Errorf("read %s during rotation: %d bytes matching neither version", f.Path, len(data))
			return false
		}
	}
	after, err := os.Readlink(filepath.Join(view, "..data"))
	if err != nil {
		t.Errorf("read ..data: %v", err)
		return false
	}
	if before != after {
		return false
	}
	if len(seen) != 1 {
		t.Errorf("files read from %s mix both versions", before)
	}
	return true
}

func TestNoSecretInLogsOrErrors(t *testing.T) {
	requireMountPrivilege(t)
	const canary = "canary-9d2e7f41-do-not-log"
	m, logs := newTestMounter(t)
	target := mountVolume(t, m, MountOptions{SizeBytes: 64 << 10, ReadOnly: true})
	secret := []byte(canary)

	var errs []error
	calls := []struct {
		files []File
		max   int64
	}{
		{files: []File{{Path: "token", Data: secret}, {Path: "dir/key", Data: secret}}, max: 1 << 20},
		{files: []File{{Path: "token", Data: secret}, {Path: "dir/key", Data: secret}}, max: 1 << 20},
		{files: []File{{Path: "token", Data: secret}}, max: 3},
		{files: []File{{Path: "../token", Data: secret}}, max: 1 << 20},
		{files: []File{{Path: "token", Data: bytes.Repeat(secret, 4096)}}, max: 1 << 20},
	}
	for _, call := range calls {
		_, err := m.WriteFiles(target, call.files, WriteOptions{MaxBytes: call.max}, true)
		errs = append(errs, err)
	}
	errs = append(errs, m.Unmount(target))

	if strings.Contains(logs.String(), canary) {
		t.Errorf("logs contain the secret:\n%s", logs)
	}
	if !strings.Contains(logs.String(), "level=DEBUG") {
		t.Errorf("logs have no Debug records, so the check saw nothing:\n%s", logs)
	}
	for i, err := range errs {
		if err != nil && strings.Contains(fmt.Sprint(err), canary) {
			t.Errorf("error of call %d contains the secret: %v", i+1, err)
		}
	}
	if errs[2] == nil || errs[3] == nil || errs[4] == nil {
		t.Errorf("failing calls returned %v, want errors so their messages were checked", errs[2:5])
	}
}

func BenchmarkWrite(b *testing.B) {
	requireMountPrivilege(b)
	m := NewMounter(nil)
	target := mountVolume(b, m, MountOptions{SizeBytes: 1 << 20})
	opts := WriteOptions{MaxBytes: 1 << 16}
	files := make([]File, 10)
	for i := range files {
		files[i] = File{Path: fmt.Sprintf("secret-%d", i), Data: make([]byte, 64)}
	}

	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		// New content each iteration, so every Write publishes a new
		// directory.
		for j := range files {
			files[j].Data = fmt.Appendf(files[j].Data[:0], "%064d", i)
		}
		// Without a grace each Write removes the directory the previous
		// one replaced, which is the cost when rotations are further apart
		// than SupersededGrace.
		changed, err := write(target, files, opts, 0)
		if err != nil || !changed {
			b.Fatalf("write() = %t, %v, want true, nil", changed, err)
		}
	}
}

func readLink(t *testing.T, p string) string {
	t.Helper()
	dest, err := os.Readlink(p)
	if err != nil {
		t.Fatalf("read link: %v", err)
	}
	return dest
}

func assertLink(t *testing.T, p, want string) {
	t.Helper()
	got, err := os.Readlink(p)
	if err != nil || got != want {
		t.Errorf("link %s = %q, %v, want %q", p, got, err, want)
	}
}

func assertOwnerMode(t *testing.T, p string, gid uint32, mode uint32) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		t.Errorf("stat %s: %v", p, err)
		return
	}
	if st.Uid != 0 || st.Gid != gid || st.Mode&0o7777 != mode {
		t.Errorf("%s: owner %d:%d mode %#o, want 0:%d mode %#o", p, st.Uid, st.Gid, st.Mode&0o7777, gid, mode)
	}
}
