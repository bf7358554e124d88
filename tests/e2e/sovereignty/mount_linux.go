package sovereignty

import (
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// memoryFileSystems keep their data in memory only. Phantom's volumes and
// its node state directory are among them, so the scan must not enter
// them.
var memoryFileSystems = map[int64]string{
	unix.TMPFS_MAGIC: "tmpfs",
	unix.RAMFS_MAGIC: "ramfs",
}

// pseudoFileSystems show kernel state, not stored data.
var pseudoFileSystems = map[int64]string{
	unix.PROC_SUPER_MAGIC:    "proc",
	unix.SYSFS_MAGIC:         "sysfs",
	unix.NSFS_MAGIC:          "nsfs",
	unix.CGROUP_SUPER_MAGIC:  "cgroup",
	unix.CGROUP2_SUPER_MAGIC: "cgroup2",
	unix.DEVPTS_SUPER_MAGIC:  "devpts",
	unix.BPF_FS_MAGIC:        "bpf",
	unix.SECURITYFS_MAGIC:    "securityfs",
	unix.DEBUGFS_MAGIC:       "debugfs",
	unix.TRACEFS_MAGIC:       "tracefs",
}

// mountPolicy decides from statfs whether the file system at path is
// scanned. Disk file systems are scanned. Memory and pseudo file systems
// are not. Overlay mounts are not either, because their layers are
// directories of containerd's snapshotter on the disk below, which the
// scan reads directly.
func mountPolicy(path string) (string, bool, string, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return "", false, "", fmt.Errorf("statfs %s: %w", path, err)
	}
	fsType := int64(st.Type)
	if name, ok := memoryFileSystems[fsType]; ok {
		return name, false, "memory-backed", nil
	}
	if name, ok := pseudoFileSystems[fsType]; ok {
		return name, false, "pseudo file system", nil
	}
	if fsType == unix.OVERLAYFS_SUPER_MAGIC {
		return "overlay", false, "layers are scanned in the snapshotter directories", nil
	}
	return fmt.Sprintf("0x%x", fsType), true, "", nil
}

// deviceOf returns the device of path without following a final symbolic
// link.
func deviceOf(path string) (uint64, error) {
	info, err := os.Lstat(path)
	if err != nil {
		return 0, err
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, fmt.Errorf("stat %s: no device number", path)
	}
	return uint64(st.Dev), nil
}
