package tmpfs

import (
	"fmt"
	"strings"

	"golang.org/x/sys/unix"
	"k8s.io/mount-utils"
)

// syscallMounter mounts and unmounts with the mount(2) and umount2(2)
// system calls instead of running mount(8) and umount(8) as mount-utils
// does. Starting a process costs milliseconds on every publish, which is
// most of a publish's time, and the daemon's image then needs no
// util-linux. Everything else, mountinfo parsing included, comes from
// mount-utils.
type syscallMounter struct {
	mount.Interface
}

var mountFlags = map[string]uintptr{
	"noexec": unix.MS_NOEXEC,
	"nosuid": unix.MS_NOSUID,
	"nodev":  unix.MS_NODEV,
	"ro":     unix.MS_RDONLY,
}

// Mount mounts a filesystem of fstype. Options that are mount flags become
// flags; the rest is passed to the filesystem as data.
func (syscallMounter) Mount(source, target, fstype string, options []string) error {
	var flags uintptr
	var data []string
	for _, opt := range options {
		if flag, ok := mountFlags[opt]; ok {
			flags |= flag
			continue
		}
		data = append(data, opt)
	}
	if err := unix.Mount(source, target, fstype, flags, strings.Join(data, ",")); err != nil {
		return fmt.Errorf("mount(2) %s at %s: %w", fstype, target, err)
	}
	return nil
}

// Unmount unmounts the filesystem at target. UMOUNT_NOFOLLOW keeps a
// symlink planted at target from redirecting the unmount.
func (syscallMounter) Unmount(target string) error {
	if err := unix.Unmount(target, unix.UMOUNT_NOFOLLOW); err != nil {
		return fmt.Errorf("umount(2) %s: %w", target, err)
	}
	return nil
}
