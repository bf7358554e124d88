package tmpfs

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"k8s.io/mount-utils"
)

// maxStackedMounts bounds the unmount loop of Unmount, so a mount that keeps
// reappearing (through mount propagation, for example) ends in an error
// instead of a busy loop.
const maxStackedMounts = 16

// Log keys.
const (
	keyTarget   = "target"
	keyBytes    = "bytes"
	keyReadOnly = "readOnly"
	keyFiles    = "files"
	keyDir      = "dir"
	keyName     = "name"
	keyCount    = "count"
	keyError    = "error"
)

// Mounter mounts and unmounts Phantom tmpfs volumes.
//
// A Mounter is safe for concurrent use. Calls for the same target path are
// serialized, and calls for different targets run in parallel.
type Mounter struct {
	logger  *slog.Logger
	mounter mount.Interface
	locks   targetLocks
	// noswap is true when the kernel supports the tmpfs option noswap
	// (Linux 6.4 and later), which keeps secret pages out of swap.
	noswap bool
	// grace is how long a replaced content directory stays, normally
	// SupersededGrace.
	grace time.Duration

	pruneMu     sync.Mutex
	pruneTimers map[string]*time.Timer
}

// NewMounter returns a Mounter that runs mount(8) and umount(8) through
// k8s.io/mount-utils without systemd scopes. A nil logger discards records.
func NewMounter(logger *slog.Logger) *Mounter {
	m := &Mounter{
		logger:  discardLogger(logger),
		mounter: syscallMounter{Interface: mount.NewWithoutSystemd("")},
		noswap:  kernelSupportsNoswap(),
		grace:   SupersededGrace,
	}
	if !m.noswap {
		m.logger.Warn("kernel does not support the tmpfs option noswap (Linux 6.4 or later), so secret pages may be written to swap if the node has swap enabled")
	}
	return m
}

// Mount mounts a Phantom tmpfs at target and reports whether it created a
// new mount.
//
// Mount creates target (mode 0750) when it is missing, and its parent must
// exist. When target already contains a Phantom tmpfs, Mount changes nothing
// and returns false, so repeated publishes never stack mounts. It does not
// compare the options of that mount with opts. It returns an
// error wrapping ErrForeignMount when another mount is at target and
// ErrNotDirectory when target is not a directory. When mounting fails, Mount
// removes the directory it created.
//
// The tmpfs is mounted with noexec, nosuid, nodev, size=SizeBytes,
// mode=0750, gid=GID when GID is set, and noswap when the kernel supports it
// (Linux 6.4 and later). With ReadOnly set, the mount point is read-only
// from the start.
func (m *Mounter) Mount(target string, opts MountOptions) (bool, error) {
	if err := validateMountOptions(opts); err != nil {
		return false, err
	}
	target, err := canonicalPath(target)
	if err != nil {
		return false, err
	}
	defer m.locks.lock(target)()
	log := m.logger.With(keyTarget, target)

	createdDir, err := ensureDir(target)
	if err != nil {
		return false, err
	}
	if createdDir {
		log.Debug("created target directory")
	}

	state, _, err := stateAt(target)
	if err != nil {
		return false, errors.Join(err, removeCreatedDir(target, createdDir))
	}
	switch state {
	case phantomMounted:
		log.Debug("target is already a Phantom tmpfs, nothing to do")
		return false, nil
	case foreignMounted:
		err := fmt.Errorf("mount tmpfs at %s: %w; unmount it or use another target path", target, ErrForeignMount)
		return false, errors.Join(err, removeCreatedDir(target, createdDir))
	}

	if err := m.mountTmpfs(target, opts); err != nil {
		return false, errors.Join(err, removeCreatedDir(target, createdDir))
	}
	log.Debug("mounted tmpfs", keyBytes, opts.SizeBytes, keyReadOnly, opts.ReadOnly)
	return true, nil
}

// IsMounted reports whether the topmost mount at exactly target is a
// Phantom tmpfs. A missing target is not mounted.
func (m *Mounter) IsMounted(target string) (bool, error) {
	target, err := canonicalPath(target)
	if err != nil {
		return false, err
	}
	state, _, err := stateAt(target)
	if err != nil {
		return false, err
	}
	return state == phantomMounted, nil
}

// Unmount unmounts the Phantom tmpfs at target, every one of them if several
// are stacked, and then removes the target directory.
//
// Unmount succeeds when target is missing or not mounted. It returns an
// error wrapping ErrForeignMount, and keeps the directory, when another
// mount is at target, and an error when the directory is not empty after
// unmounting, because those files are not Phantom's to delete.
func (m *Mounter) Unmount(target string) error {
	target, err := canonicalPath(target)
	if err != nil {
		return err
	}
	defer m.locks.lock(target)()
	log := m.logger.With(keyTarget, target)

	info, err := os.Lstat(target)
	if errors.Is(err, fs.ErrNotExist) {
		log.Debug("target is missing, nothing to unmount")
		return nil
	}
	if err != nil {
		return fmt.Errorf("unmount %s: %w", target, err)
	}
	if !info.IsDir() {
		return fmt.Errorf("unmount %s: %w (file type %s); remove it by hand if it is not needed", target, ErrNotDirectory, info.Mode().Type())
	}

	m.cancelPrune(target)
	if err := m.unmountAll(target, log); err != nil {
		return err
	}

	if err := os.Remove(target); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove target directory %s after unmount: %w; it contains files outside the tmpfs, inspect and remove them", target, err)
	}
	log.Debug("removed target directory")
	return nil
}

// List returns the mount points of all Phantom tmpfs mounts in the calling
// process's mount namespace, each once, in mountinfo order. It returns every
// path for which IsMounted reports true, bind mounts of a Phantom tmpfs
// included.
func (m *Mounter) List() ([]string, error) {
	infos, err := readMountInfo()
	if err != nil {
		return nil, err
	}

	var targets []string
	seen := map[string]bool{}
	for _, info := range infos {
		point := unescapeMountPath(info.MountPoint)
		if seen[point] {
			continue
		}
		seen[point] = true
		if top, ok := topMountAt(infos, point); ok && isPhantom(top) {
			targets = append(targets, point)
		}
	}
	return targets, nil
}

// Device returns the st_dev of the Phantom tmpfs at target, in the encoding
// of stat(2); unix.Major and unix.Minor split it. See KernelDevice for the
// encoding that kernel code (eBPF programs) compares against. It returns an
// error wrapping ErrNotMounted when no Phantom tmpfs is at target.
func (m *Mounter) Device(target string) (uint64, error) {
	target, err := canonicalPath(target)
	if err != nil {
		return 0, err
	}
	state, info, err := stateAt(target)
	if err != nil {
		return 0, err
	}
	if state != phantomMounted {
		return 0, fmt.Errorf("read device of %s: %w", target, ErrNotMounted)
	}

	var st unix.Stat_t
	if err := unix.Stat(target, &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", target, err)
	}
	// A mismatch means the mount changed between the two reads.
	if want := unix.Mkdev(uint32(info.Major), uint32(info.Minor)); st.Dev != want {
		return 0, fmt.Errorf("read device of %s: stat reports %d:%d but mountinfo %d:%d; the mount changed, retry", target, unix.Major(st.Dev), unix.Minor(st.Dev), info.Major, info.Minor)
	}
	return st.Dev, nil
}

// KernelDevice converts a stat(2) device number into the kernel's internal
// dev_t encoding (major << 20 | minor), which is what an eBPF program reads
// from a superblock's s_dev.
func KernelDevice(dev uint64) uint32 {
	return unix.Major(dev)<<20 | unix.Minor(dev)
}

// SetReadOnly makes the Phantom tmpfs at target read-only or writable.
//
// Only the flag of this mount point changes (a bind remount), and the
// superblock stays writable. Bind mounts of the tmpfs, such as the ones a
// container runtime creates, keep their own flags and see every change of
// content. It returns an error wrapping ErrNotMounted when no Phantom tmpfs
// is at target.
func (m *Mounter) SetReadOnly(target string, readOnly bool) error {
	target, err := canonicalPath(target)
	if err != nil {
		return err
	}
	defer m.locks.lock(target)()

	if err := requirePhantom(target); err != nil {
		return err
	}
	return m.remount(target, readOnly)
}

// WriteFiles writes files into the Phantom tmpfs at target with Write and
// reports whether the content changed.
//
// When the mount point is read-only, or readOnly is true, WriteFiles makes
// it writable for the write and read-only again afterwards, also when the
// write fails. After a change it schedules the removal of the replaced
// content directory for when SupersededGrace has passed. It returns an
// error wrapping ErrNotMounted when no Phantom tmpfs is at target.
// opts.Logger defaults to the Mounter's logger.
func (m *Mounter) WriteFiles(target string, files []File, opts WriteOptions, readOnly bool) (bool, error) {
	target, err := canonicalPath(target)
	if err != nil {
		return false, err
	}
	defer m.locks.lock(target)()

	if err := requirePhantom(target); err != nil {
		return false, err
	}
	if opts.Logger == nil {
		opts.Logger = m.logger
	}

	var changed bool
	err = m.whileWritable(target, readOnly, func() error {
		var writeErr error
		changed, writeErr = write(target, files, opts, m.grace)
		return writeErr
	})
	if changed {
		m.schedulePrune(target)
	}
	return changed, err
}

// whileWritable runs fn with the mount point at target writable. When the
// mount point was read-only, or readOnly is true, it is read-only again
// afterwards, also when fn fails.
func (m *Mounter) whileWritable(target string, readOnly bool, fn func() error) error {
	wasReadOnly, err := isReadOnly(target)
	if err != nil {
		return err
	}
	if wasReadOnly {
		if err := m.remount(target, false); err != nil {
			return err
		}
	}

	fnErr := fn()
	if readOnly || wasReadOnly {
		if err := m.remount(target, true); err != nil {
			return errors.Join(fnErr, err)
		}
	}
	return fnErr
}

// mountTmpfs runs mount(8) for a Phantom tmpfs at target.
func (m *Mounter) mountTmpfs(target string, opts MountOptions) error {
	options := []string{
		"noexec", "nosuid", "nodev",
		"size=" + strconv.FormatInt(opts.SizeBytes, 10),
		fmt.Sprintf("mode=%04o", uint32(RootMode)),
	}
	if opts.GID != nil {
		options = append(options, "gid="+strconv.FormatInt(*opts.GID, 10))
	}
	if m.noswap {
		options = append(options, "noswap")
	}

	if err := m.mounter.Mount(Source, target, "tmpfs", options); err != nil {
		return fmt.Errorf("mount tmpfs at %s: %w", target, err)
	}
	if !opts.ReadOnly {
		return nil
	}
	if err := m.remount(target, true); err != nil {
		return errors.Join(err, m.unmountOnce(target))
	}
	return nil
}

// unmountAll unmounts Phantom tmpfs mounts at target until none is left.
func (m *Mounter) unmountAll(target string, log *slog.Logger) error {
	for range maxStackedMounts {
		state, _, err := stateAt(target)
		if err != nil {
			return err
		}
		switch state {
		case notMounted:
			return nil
		case foreignMounted:
			return fmt.Errorf("unmount %s: %w; unmount it by hand, Phantom leaves it alone", target, ErrForeignMount)
		}

		if err := m.unmountOnce(target); err != nil {
			return err
		}
		log.Debug("unmounted tmpfs")
	}
	return fmt.Errorf("unmount %s: still mounted after %d unmounts; check mount propagation with findmnt", target, maxStackedMounts)
}

func (m *Mounter) unmountOnce(target string) error {
	if err := m.mounter.Unmount(target); err != nil {
		return fmt.Errorf("unmount %s: %w", target, err)
	}
	return nil
}

// remount sets or clears the read-only flag of the mount point at target.
// A bind remount replaces all per-mount flags, so nosuid, nodev and noexec
// are passed again. The kernel keeps the current atime flags when none is
// passed.
func (m *Mounter) remount(target string, readOnly bool) error {
	flags := uintptr(unix.MS_REMOUNT | unix.MS_BIND | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if readOnly {
		flags |= unix.MS_RDONLY
	}
	if err := unix.Mount("", target, "", flags, ""); err != nil {
		return fmt.Errorf("remount %s with read-only=%t: %w", target, readOnly, err)
	}
	m.logger.Debug("remounted tmpfs", keyTarget, target, keyReadOnly, readOnly)
	return nil
}

func isReadOnly(target string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(target, &st); err != nil {
		return false, fmt.Errorf("statfs %s: %w", target, err)
	}
	// statfs reports ST_RDONLY, which has the value of MS_RDONLY, when the
	// mount point or the superblock is read-only.
	return st.Flags&unix.MS_RDONLY != 0, nil
}

func requirePhantom(target string) error {
	state, _, err := stateAt(target)
	if err != nil {
		return err
	}
	if state != phantomMounted {
		return fmt.Errorf("%s: %w; publish the volume first", target, ErrNotMounted)
	}
	return nil
}

func validateMountOptions(opts MountOptions) error {
	if opts.SizeBytes <= 0 {
		return fmt.Errorf("%w: SizeBytes %d must be positive; set the tmpfs size limit in bytes", ErrInvalidOptions, opts.SizeBytes)
	}
	return validateGID("GID", opts.GID)
}

// ensureDir creates target when it is missing and reports whether it did.
// It returns ErrNotDirectory when target is something other than a
// directory, a symlink included, because mounting would follow the symlink.
func ensureDir(target string) (bool, error) {
	info, err := os.Lstat(target)
	switch {
	case err == nil && info.IsDir():
		return false, nil
	case err == nil:
		return false, fmt.Errorf("mount tmpfs at %s: %w (file type %s); remove it or pass a directory path", target, ErrNotDirectory, info.Mode().Type())
	case !errors.Is(err, fs.ErrNotExist):
		return false, fmt.Errorf("mount tmpfs at %s: %w", target, err)
	}

	if err := os.Mkdir(target, RootMode); err != nil {
		return false, fmt.Errorf("create target directory %s: %w; its parent directory must exist", target, err)
	}
	return true, nil
}

func removeCreatedDir(target string, created bool) error {
	if !created {
		return nil
	}
	if err := os.Remove(target); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove target directory %s after failed mount: %w", target, err)
	}
	return nil
}

// kernelSupportsNoswap reports whether the running kernel is Linux 6.4 or
// later, the first release whose tmpfs accepts the option noswap.
//
// NOTE: a distribution kernel that backported noswap to an older release is
// not detected, and its mounts go without the option.
func kernelSupportsNoswap() bool {
	var uts unix.Utsname
	if err := unix.Uname(&uts); err != nil {
		return false
	}
	release := unix.ByteSliceToString(uts.Release[:])
	majorText, rest, _ := strings.Cut(release, ".")
	major, err1 := strconv.Atoi(majorText)
	minor, err2 := strconv.Atoi(leadingDigits(rest))
	if err1 != nil || err2 != nil {
		return false
	}
	return major > 6 || major == 6 && minor >= 4
}

// leadingDigits returns the decimal digits at the start of s ("4" of
// "4-rc1").
func leadingDigits(s string) string {
	end := strings.IndexFunc(s, func(r rune) bool { return r < '0' || r > '9' })
	if end < 0 {
		return s
	}
	return s[:end]
}

// targetLocks serializes operations on the same target path.
type targetLocks struct {
	mu    sync.Mutex
	locks map[string]*targetLock
}

type targetLock struct {
	mu   sync.Mutex
	refs int
}

// lock locks target and returns the function that unlocks it.
func (l *targetLocks) lock(target string) (unlock func()) {
	l.mu.Lock()
	if l.locks == nil {
		l.locks = map[string]*targetLock{}
	}
	entry := l.locks[target]
	if entry == nil {
		entry = &targetLock{}
		l.locks[target] = entry
	}
	entry.refs++
	l.mu.Unlock()

	entry.mu.Lock()
	return func() {
		entry.mu.Unlock()
		l.mu.Lock()
		entry.refs--
		if entry.refs == 0 {
			delete(l.locks, target)
		}
		l.mu.Unlock()
	}
}
