package tmpfs

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
	"k8s.io/mount-utils"
)

func TestMountCreatesTmpfs(t *testing.T) {
	requireMountPrivilege(t)
	m, _ := newTestMounter(t)
	target := mountVolume(t, m, MountOptions{SizeBytes: 1 << 20, GID: int64Ptr(1234)})

	info := onlyMountAt(t, target)
	if info.FsType != "tmpfs" || info.Source != Source {
		t.Errorf("mount at %s is %s from %q, want tmpfs from %q", target, info.FsType, info.Source, Source)
	}
	for _, opt := range []string{"rw", "noexec", "nosuid", "nodev"} {
		if !hasOption(info.MountOptions, opt) {
			t.Errorf("mount options %v lack %s", info.MountOptions, opt)
		}
	}
	wantSuper := []string{"size=1024k", "mode=750", "gid=1234"}
	if kernelSupportsNoswap() {
		wantSuper = append(wantSuper, "noswap")
	}
	for _, opt := range wantSuper {
		if !hasOption(info.SuperOptions, opt) {
			t.Errorf("superblock options %v lack %s", info.SuperOptions, opt)
		}
	}

	var st unix.Stat_t
	if err := unix.Stat(target, &st); err != nil {
		t.Fatal(err)
	}
	if got := st.Mode & 0o7777; got != 0o750 {
		t.Errorf("root directory mode = %#o, want 0750", got)
	}
	if st.Uid != 0 || st.Gid != 1234 {
		t.Errorf("root directory owner = %d:%d, want 0:1234", st.Uid, st.Gid)
	}
	mounted, err := m.IsMounted(target)
	if err != nil || !mounted {
		t.Errorf("IsMounted(%s) = %t, %v, want true, nil", target, mounted, err)
	}
}

func TestMountWithoutGID(t *testing.T) {
	requireMountPrivilege(t)
	m, _ := newTestMounter(t)
	target := mountVolume(t, m, MountOptions{SizeBytes: 4096})

	info := onlyMountAt(t, target)
	for _, opt := range info.SuperOptions {
		if len(opt) > 4 && opt[:4] == "gid=" {
			t.Errorf("superblock options %v contain %s, want no gid option", info.SuperOptions, opt)
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(target, &st); err != nil {
		t.Fatal(err)
	}
	if st.Gid != 0 {
		t.Errorf("root directory group = %d, want 0", st.Gid)
	}
}

func TestMountExistingDirectory(t *testing.T) {
	requireMountPrivilege(t)
	m, _ := newTestMounter(t)
	target := filepath.Join(t.TempDir(), "volume")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	cleanupMounts(t, target)

	created, err := m.Mount(target, MountOptions{SizeBytes: 4096})
	if err != nil || !created {
		t.Fatalf("Mount(%s) = %t, %v, want true, nil", target, created, err)
	}
	onlyMountAt(t, target)
}

func TestMountIdempotent(t *testing.T) {
	requireMountPrivilege(t)
	m, _ := newTestMounter(t)
	target := mountVolume(t, m, MountOptions{SizeBytes: 4096})

	created, err := m.Mount(target, MountOptions{SizeBytes: 4096})
	if err != nil || created {
		t.Fatalf("second Mount(%s) = %t, %v, want false, nil", target, created, err)
	}
	onlyMountAt(t, target)
}

func TestMountConcurrentCallsMountOnce(t *testing.T) {
	requireMountPrivilege(t)
	m, _ := newTestMounter(t)
	target := filepath.Join(t.TempDir(), "volume")
	cleanupMounts(t, target)

	const callers = 4
	var wg sync.WaitGroup
	results := make([]bool, callers)
	errs := make([]error, callers)
	for i := range callers {
		wg.Go(func() {
			results[i], errs[i] = m.Mount(target, MountOptions{SizeBytes: 4096})
		})
	}
	wg.Wait()

	if err := errors.Join(errs...); err != nil {
		t.Fatalf("concurrent Mount: %v", err)
	}
	if got := countTrue(results); got != 1 {
		t.Errorf("%d of %d concurrent Mount calls created a mount, want 1", got, callers)
	}
	onlyMountAt(t, target)
}

func TestMountForeignMount(t *testing.T) {
	requireMountPrivilege(t)
	m, _ := newTestMounter(t)
	target := filepath.Join(t.TempDir(), "volume")
	if err := os.Mkdir(target, 0o750); err != nil {
		t.Fatal(err)
	}
	cleanupMounts(t, target)
	if err := unix.Mount("other", target, "tmpfs", 0, "size=4k"); err != nil {
		t.Fatalf("mount foreign tmpfs: %v", err)
	}

	if _, err := m.Mount(target, MountOptions{SizeBytes: 4096}); !errors.Is(err, ErrForeignMount) {
		t.Errorf("Mount over a foreign tmpfs = %v, want ErrForeignMount", err)
	}
	if mounted, err := m.IsMounted(target); err != nil || mounted {
		t.Errorf("IsMounted(foreign tmpfs) = %t, %v, want false, nil", mounted, err)
	}
	if err := m.Unmount(target); !errors.Is(err, ErrForeignMount) {
		t.Errorf("Unmount(foreign tmpfs) = %v, want ErrForeignMount", err)
	}
	if _, err := m.Device(target); !errors.Is(err, ErrNotMounted) {
		t.Errorf("Device(foreign tmpfs) = %v, want ErrNotMounted", err)
	}
	if info := onlyMountAt(t, target); info.Source != "other" {
		t.Errorf("mount at target has source %q after the calls, want the foreign %q", info.Source, "other")
	}
}

func TestMountForeignOnTopOfPhantom(t *testing.T) {
	requireMountPrivilege(t)
	m, _ := newTestMounter(t)
	target := mountVolume(t, m, MountOptions{SizeBytes: 4096})
	if err := unix.Mount("other", target, "tmpfs", 0, "size=4k"); err != nil {
		t.Fatalf("mount foreign tmpfs: %v", err)
	}

	if _, err := m.Mount(target, MountOptions{SizeBytes: 4096}); !errors.Is(err, ErrForeignMount) {
		t.Errorf("Mount under a foreign tmpfs = %v, want ErrForeignMount", err)
	}
	if mounted, err := m.IsMounted(target); err != nil || mounted {
		t.Errorf("IsMounted(covered Phantom tmpfs) = %t, %v, want false, nil", mounted, err)
	}
}

func TestMountRejectsNonDirectory(t *testing.T) {
	requireMountPrivilege(t)
	m, _ := newTestMounter(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("keep"), 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "link")
	if err := os.Symlink(t.TempDir(), link); err != nil {
		t.Fatal(err)
	}

	for _, target := range []string{file, link} {
		cleanupMounts(t, target)
		if _, err := m.Mount(target, MountOptions{SizeBytes: 4096}); !errors.Is(err, ErrNotDirectory) {
			t.Errorf("Mount(%s) = %v, want ErrNotDirectory", target, err)
		}
		if n := len(mountsAt(t, target)); n != 0 {
			t.Errorf("mountinfo has %d entries at %s, want 0", n, target)
		}
		if err := m.Unmount(target); !errors.Is(err, ErrNotDirectory) {
			t.Errorf("Unmount(%s) = %v, want ErrNotDirectory", target, err)
		}
	}
	if data, err := os.ReadFile(file); err != nil || string(data) != "keep" {
		t.Errorf("file content after Mount = %q, %v, want it unchanged", data, err)
	}
}

func TestMountRejectsInvalidOptions(t *testing.T) {
	m, _ := newTestMounter(t)
	dir := t.TempDir()
	tests := []struct {
		name   string
		target string
		opts   MountOptions
		wantIs error
	}{
		{name: "zero size", target: filepath.Join(dir, "a"), opts: MountOptions{}, wantIs: ErrInvalidOptions},
		{name: "negative size", target: filepath.Join(dir, "a"), opts: MountOptions{SizeBytes: -1}, wantIs: ErrInvalidOptions},
		{name: "negative gid", target: filepath.Join(dir, "a"), opts: MountOptions{SizeBytes: 1, GID: int64Ptr(-1)}, wantIs: ErrInvalidOptions},
		{name: "gid above 32 bits", target: filepath.Join(dir, "a"), opts: MountOptions{SizeBytes: 1, GID: int64Ptr(1 << 32)}, wantIs: ErrInvalidOptions},
		{name: "relative target", target: "volume", opts: MountOptions{SizeBytes: 1}, wantIs: ErrInvalidOptions},
		{name: "root target", target: "/", opts: MountOptions{SizeBytes: 1}, wantIs: ErrInvalidOptions},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := m.Mount(tt.target, tt.opts); !errors.Is(err, tt.wantIs) {
				t.Errorf("Mount() = %v, want an error wrapping %v", err, tt.wantIs)
			}
			if _, err := os.Lstat(tt.target); tt.target != "/" && !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("target %s exists after a rejected Mount (%v)", tt.target, err)
			}
		})
	}
}

// failingMounter is a mount.Interface whose Mount fails.
type failingMounter struct {
	mount.Interface
}

func (failingMounter) Mount(string, string, string, []string) error {
	return errors.New("injected mount failure")
}

func TestMountFailureRemovesCreatedDirectory(t *testing.T) {
	m, _ := newTestMounter(t)
	m.mounter = failingMounter{Interface: mount.NewFakeMounter(nil)}
	dir := t.TempDir()

	created := filepath.Join(dir, "created")
	if _, err := m.Mount(created, MountOptions{SizeBytes: 4096}); err == nil {
		t.Fatal("Mount() with a failing mounter = nil, want an error")
	}
	if _, err := os.Lstat(created); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("target created by the failed Mount still exists (%v)", err)
	}

	existing := filepath.Join(dir, "existing")
	if err := os.Mkdir(existing, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Mount(existing, MountOptions{SizeBytes: 4096}); err == nil {
		t.Fatal("Mount() with a failing mounter = nil, want an error")
	}
	if _, err := os.Stat(existing); err != nil {
		t.Errorf("target that existed before the failed Mount is gone: %v", err)
	}
}

func TestMountMissingParent(t *testing.T) {
	m, _ := newTestMounter(t)
	target := filepath.Join(t.TempDir(), "missing", "volume")
	_, err := m.Mount(target, MountOptions{SizeBytes: 4096})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Mount() below a missing parent = %v, want an error wrapping fs.ErrNotExist", err)
	}
}

func TestUnmountIdempotent(t *testing.T) {
	requireMountPrivilege(t)
	m, _ := newTestMounter(t)

	t.Run("missing target", func(t *testing.T) {
		if err := m.Unmount(filepath.Join(t.TempDir(), "missing")); err != nil {
			t.Errorf("Unmount(missing) = %v, want nil", err)
		}
	})

	t.Run("directory not mounted", func(t *testing.T) {
		target := filepath.Join(t.TempDir(), "volume")
		if err := os.Mkdir(target, 0o750); err != nil {
			t.Fatal(err)
		}
		if err := m.Unmount(target); err != nil {
			t.Fatalf("Unmount(not mounted) = %v, want nil", err)
		}
		if _, err := os.Lstat(target); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("target still exists after Unmount (%v)", err)
		}
	})

	t.Run("mounted twice in a row", func(t *testing.T) {
		target := mountVolume(t, m, MountOptions{SizeBytes: 4096})
		for i := range 2 {
			if err := m.Unmount(target); err != nil {
				t.Fatalf("Unmount #%d = %v, want nil", i+1, err)
			}
		}
		if n := len(mountsAt(t, target)); n != 0 {
			t.Errorf("mountinfo has %d entries at %s after Unmount, want 0", n, target)
		}
		if _, err := os.Lstat(target); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("target still exists after Unmount (%v)", err)
		}
		if mounted, err := m.IsMounted(target); err != nil || mounted {
			t.Errorf("IsMounted after Unmount = %t, %v, want false, nil", mounted, err)
		}
	})

	t.Run("stacked mounts", func(t *testing.T) {
		target := mountVolume(t, m, MountOptions{SizeBytes: 4096})
		if err := unix.Mount(Source, target, "tmpfs", 0, "size=4k"); err != nil {
			t.Fatalf("stack a second Phantom tmpfs: %v", err)
		}
		if n := len(mountsAt(t, target)); n != 2 {
			t.Fatalf("mountinfo has %d entries at %s, want 2 stacked", n, target)
		}
		if err := m.Unmount(target); err != nil {
			t.Fatalf("Unmount(stacked) = %v, want nil", err)
		}
		if n := len(mountsAt(t, target)); n != 0 {
			t.Errorf("mountinfo has %d entries at %s after Unmount, want 0", n, target)
		}
	})
}

func TestUnmountKeepsNonEmptyDirectory(t *testing.T) {
	m, _ := newTestMounter(t)
	target := filepath.Join(t.TempDir(), "volume")
	if err := os.Mkdir(target, 0o750); err != nil {
		t.Fatal(err)
	}
	stray := filepath.Join(target, "stray")
	if err := os.WriteFile(stray, nil, 0o600); err != nil {
		t.Fatal(err)
	}

	if err := m.Unmount(target); err == nil {
		t.Fatal("Unmount(non-empty directory) = nil, want an error")
	}
	if _, err := os.Stat(stray); err != nil {
		t.Errorf("file in the target directory is gone: %v", err)
	}
}

func TestList(t *testing.T) {
	requireMountPrivilege(t)
	m, _ := newTestMounter(t)
	first := mountVolume(t, m, MountOptions{SizeBytes: 4096})
	second := mountVolume(t, m, MountOptions{SizeBytes: 4096})
	foreign := filepath.Join(t.TempDir(), "foreign")
	if err := os.Mkdir(foreign, 0o750); err != nil {
		t.Fatal(err)
	}
	cleanupMounts(t, foreign)
	if err := unix.Mount("other", foreign, "tmpfs", 0, "size=4k"); err != nil {
		t.Fatal(err)
	}

	targets, err := m.List()
	if err != nil {
		t.Fatalf("List() = %v", err)
	}
	for _, want := range []string{first, second} {
		if !slices.Contains(targets, want) {
			t.Errorf("List() = %v, want it to contain %s", targets, want)
		}
	}
	if slices.Contains(targets, foreign) {
		t.Errorf("List() = %v, want it without the foreign tmpfs %s", targets, foreign)
	}

	if err := m.Unmount(first); err != nil {
		t.Fatal(err)
	}
	targets, err = m.List()
	if err != nil {
		t.Fatalf("List() = %v", err)
	}
	if slices.Contains(targets, first) {
		t.Errorf("List() = %v after Unmount, want it without %s", targets, first)
	}
}

func TestDevice(t *testing.T) {
	requireMountPrivilege(t)
	m, _ := newTestMounter(t)
	first := mountVolume(t, m, MountOptions{SizeBytes: 4096})
	second := mountVolume(t, m, MountOptions{SizeBytes: 4096})

	dev, err := m.Device(first)
	if err != nil {
		t.Fatalf("Device() = %v", err)
	}
	var st unix.Stat_t
	if err := unix.Stat(first, &st); err != nil {
		t.Fatal(err)
	}
	if dev != st.Dev {
		t.Errorf("Device() = %d, want st_dev %d", dev, st.Dev)
	}
	info := onlyMountAt(t, first)
	if got, want := KernelDevice(dev), uint32(info.Major)<<20|uint32(info.Minor); got != want {
		t.Errorf("KernelDevice(%d) = %#x, want %#x for %d:%d", dev, got, want, info.Major, info.Minor)
	}

	other, err := m.Device(second)
	if err != nil {
		t.Fatalf("Device() = %v", err)
	}
	if other == dev {
		t.Errorf("two volumes share device %d, want distinct devices", dev)
	}
	if _, err := m.Device(t.TempDir()); !errors.Is(err, ErrNotMounted) {
		t.Errorf("Device(not mounted) = %v, want ErrNotMounted", err)
	}
}

func TestKernelDevice(t *testing.T) {
	t.Parallel()
	tests := []struct{ major, minor uint32 }{{0, 45}, {0, 300}, {8, 1}, {259, 70000}}
	for _, tt := range tests {
		dev := unix.Mkdev(tt.major, tt.minor)
		if got, want := KernelDevice(dev), tt.major<<20|tt.minor; got != want {
			t.Errorf("KernelDevice(Mkdev(%d, %d)) = %#x, want %#x", tt.major, tt.minor, got, want)
		}
	}
}

func TestSetReadOnly(t *testing.T) {
	requireMountPrivilege(t)
	m, _ := newTestMounter(t)
	target := mountVolume(t, m, MountOptions{SizeBytes: 4096})
	atimeBefore := atimeOption(onlyMountAt(t, target).MountOptions)

	if err := m.SetReadOnly(target, true); err != nil {
		t.Fatalf("SetReadOnly(true) = %v", err)
	}
	info := onlyMountAt(t, target)
	for _, opt := range []string{"ro", "noexec", "nosuid", "nodev"} {
		if !hasOption(info.MountOptions, opt) {
			t.Errorf("mount options %v after SetReadOnly(true) lack %s", info.MountOptions, opt)
		}
	}
	if got := atimeOption(info.MountOptions); got != atimeBefore {
		t.Errorf("atime option after SetReadOnly(true) = %q, want %q as before", got, atimeBefore)
	}
	if !hasOption(info.SuperOptions, "rw") {
		t.Errorf("superblock options %v, want rw (only the mount point is read-only)", info.SuperOptions)
	}
	if err := os.WriteFile(filepath.Join(target, "probe"), nil, 0o600); !errors.Is(err, unix.EROFS) {
		t.Errorf("create file on read-only mount = %v, want EROFS", err)
	}

	if err := m.SetReadOnly(target, false); err != nil {
		t.Fatalf("SetReadOnly(false) = %v", err)
	}
	info = onlyMountAt(t, target)
	for _, opt := range []string{"rw", "noexec", "nosuid", "nodev"} {
		if !hasOption(info.MountOptions, opt) {
			t.Errorf("mount options %v after SetReadOnly(false) lack %s", info.MountOptions, opt)
		}
	}
	if got := atimeOption(info.MountOptions); got != atimeBefore {
		t.Errorf("atime option after SetReadOnly(false) = %q, want %q as before", got, atimeBefore)
	}
	if err := os.WriteFile(filepath.Join(target, "probe"), nil, 0o600); err != nil {
		t.Errorf("create file on writable mount = %v", err)
	}

	if err := m.SetReadOnly(t.TempDir(), true); !errors.Is(err, ErrNotMounted) {
		t.Errorf("SetReadOnly(not mounted) = %v, want ErrNotMounted", err)
	}
}

func TestMountReadOnly(t *testing.T) {
	requireMountPrivilege(t)
	m, _ := newTestMounter(t)
	target := mountVolume(t, m, MountOptions{SizeBytes: 4096, ReadOnly: true})

	info := onlyMountAt(t, target)
	for _, opt := range []string{"ro", "noexec", "nosuid", "nodev"} {
		if !hasOption(info.MountOptions, opt) {
			t.Errorf("mount options %v lack %s", info.MountOptions, opt)
		}
	}
	if created, err := m.Mount(target, MountOptions{SizeBytes: 4096, ReadOnly: true}); err != nil || created {
		t.Errorf("second Mount = %t, %v, want false, nil", created, err)
	}
	if err := m.Unmount(target); err != nil {
		t.Errorf("Unmount(read-only) = %v", err)
	}
}

func TestUnescapeMountPath(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		`/plain`:                 "/plain",
		`/with\040space`:         "/with space",
		`/tab\011and\012newline`: "/tab\tand\nnewline",
		`/back\134slash`:         `/back\slash`,
		`/short\04`:              `/short\04`,
		`/not\xyzoctal`:          `/not\xyzoctal`,
	}
	for in, want := range tests {
		if got := unescapeMountPath(in); got != want {
			t.Errorf("unescapeMountPath(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestMountPathWithSpace(t *testing.T) {
	requireMountPrivilege(t)
	m, _ := newTestMounter(t)
	target := filepath.Join(t.TempDir(), "pod volume")
	cleanupMounts(t, target)

	if _, err := m.Mount(target, MountOptions{SizeBytes: 4096}); err != nil {
		t.Fatalf("Mount(%q) = %v", target, err)
	}
	if mounted, err := m.IsMounted(target); err != nil || !mounted {
		t.Errorf("IsMounted(%q) = %t, %v, want true, nil", target, mounted, err)
	}
	if created, err := m.Mount(target, MountOptions{SizeBytes: 4096}); err != nil || created {
		t.Errorf("second Mount(%q) = %t, %v, want false, nil", target, created, err)
	}
	if err := m.Unmount(target); err != nil {
		t.Errorf("Unmount(%q) = %v", target, err)
	}
}

func TestIsMountedThroughSymlinkedParent(t *testing.T) {
	requireMountPrivilege(t)
	m, _ := newTestMounter(t)
	target := mountVolume(t, m, MountOptions{SizeBytes: 4096})
	alias := filepath.Join(t.TempDir(), "alias")
	if err := os.Symlink(filepath.Dir(target), alias); err != nil {
		t.Fatal(err)
	}

	viaAlias := filepath.Join(alias, filepath.Base(target))
	if mounted, err := m.IsMounted(viaAlias); err != nil || !mounted {
		t.Errorf("IsMounted(%s) = %t, %v, want true, nil", viaAlias, mounted, err)
	}
	if created, err := m.Mount(viaAlias, MountOptions{SizeBytes: 4096}); err != nil || created {
		t.Errorf("Mount(%s) = %t, %v, want false, nil", viaAlias, created, err)
	}
}

func TestKernelSupportsNoswapMatchesKernel(t *testing.T) {
	requireMountPrivilege(t)
	dir := t.TempDir()
	cleanupMounts(t, dir)
	err := unix.Mount("phantom-noswap-probe", dir, "tmpfs", 0, "size=4k,noswap")
	if got := kernelSupportsNoswap(); got != (err == nil) {
		t.Errorf("kernelSupportsNoswap() = %t, but mounting with noswap returned %v", got, err)
	}
}

// atimeOption returns the atime option among mount options, or "" for
// strictatime, which mountinfo does not list.
func atimeOption(options []string) string {
	for _, opt := range []string{"noatime", "relatime"} {
		if hasOption(options, opt) {
			return opt
		}
	}
	return ""
}

func countTrue(values []bool) int {
	n := 0
	for _, v := range values {
		if v {
			n++
		}
	}
	return n
}
