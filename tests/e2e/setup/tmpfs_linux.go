package setup

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// EnsureTmpfs mounts a tmpfs at dir unless one is mounted there already.
// The mount is private to the host's mount namespace and unmounted by
// cluster/down.sh with everything else under the state directory.
func EnsureTmpfs(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil {
		return fmt.Errorf("statfs %s: %w", dir, err)
	}
	if fs.Type == unix.TMPFS_MAGIC {
		return nil
	}
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if err := unix.Mount("phantom-e2e-node-state", dir, "tmpfs", flags, "mode=0700,size=16m"); err != nil {
		return fmt.Errorf("mount tmpfs at %s (run as root): %w", dir, err)
	}
	return nil
}
