package monitor

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// Mount points of the cgroup v2 hierarchy: the whole /sys/fs/cgroup on
// unified-only hosts, /sys/fs/cgroup/unified on hybrid (v1 plus v2) hosts.
var cgroup2Mounts = []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified"}

// podCgroupSearchDepth bounds the search for a pod cgroup under a custom
// kubelet --cgroup-root; kubelet's own layouts are checked first.
const podCgroupSearchDepth = 6

// CgroupV2Root returns the mount point of the cgroup v2 hierarchy, on
// unified-only and on hybrid hosts.
func CgroupV2Root() (string, error) {
	for _, mount := range cgroup2Mounts {
		var st unix.Statfs_t
		if err := unix.Statfs(mount, &st); err == nil && st.Type == unix.CGROUP2_SUPER_MAGIC {
			return mount, nil
		}
	}
	return "", fmt.Errorf("find cgroup v2 hierarchy: none of %s is a cgroup2 mount", strings.Join(cgroup2Mounts, ", "))
}

// PodCgroup finds the pod-level cgroup v2 directory that kubelet created for
// the pod UID and returns its cgroup id, its level and its path. It checks
// the cgroupfs layout (kubepods/pod<uid>, kubepods/burstable/pod<uid>,
// kubepods/besteffort/pod<uid>) and the systemd layout
// (kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid>.slice
// with dashes in the uid replaced by underscores), under the hierarchy root
// or a few levels below it.
//
// The level is counted from the mount point, so the daemon must see the
// host's cgroup namespace, as a privileged DaemonSet that mounts the host's
// /sys/fs/cgroup does.
func PodCgroup(podUID string) (id uint64, level int, path string, err error) {
	root, err := CgroupV2Root()
	if err != nil {
		return 0, 0, "", err
	}
	return podCgroupIn(root, podUID)
}

func podCgroupIn(root, podUID string) (uint64, int, string, error) {
	if podUID == "" || strings.ContainsAny(podUID, "/.") {
		return 0, 0, "", fmt.Errorf("find pod cgroup: invalid pod UID %q", podUID)
	}
	path := findPodCgroupDir(root, podUID)
	if path == "" {
		return 0, 0, "", fmt.Errorf("find cgroup of pod %s under %s: %w", podUID, root, ErrPodCgroupNotFound)
	}
	id, err := CgroupID(path)
	if err != nil {
		return 0, 0, "", err
	}
	rel, err := filepath.Rel(root, path)
	if err != nil {
		return 0, 0, "", fmt.Errorf("find level of cgroup %s: %w", path, err)
	}
	return id, len(strings.Split(rel, string(filepath.Separator))), path, nil
}

// podCgroupNames returns the directory names kubelet gives a pod cgroup.
func podCgroupNames(podUID string) (cgroupfs string, systemdSuffix string) {
	return "pod" + podUID, "-pod" + strings.ReplaceAll(podUID, "-", "_") + ".slice"
}

func findPodCgroupDir(root, podUID string) string {
	cgroupfs, systemdSuffix := podCgroupNames(podUID)
	systemdName := strings.TrimPrefix(systemdSuffix, "-")
	known := []string{
		filepath.Join("kubepods", cgroupfs),
		filepath.Join("kubepods", "burstable", cgroupfs),
		filepath.Join("kubepods", "besteffort", cgroupfs),
		filepath.Join("kubepods.slice", "kubepods-"+systemdName),
		filepath.Join("kubepods.slice", "kubepods-burstable.slice", "kubepods-burstable"+systemdSuffix),
		filepath.Join("kubepods.slice", "kubepods-besteffort.slice", "kubepods-besteffort"+systemdSuffix),
	}
	for _, rel := range known {
		if isDir(filepath.Join(root, rel)) {
			return filepath.Join(root, rel)
		}
	}

	// A custom --cgroup-root puts the kubelet tree deeper: search for the name.
	var found string
	_ = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(root, path)
		if rel != "." && strings.Count(rel, string(filepath.Separator)) >= podCgroupSearchDepth {
			return filepath.SkipDir
		}
		name := d.Name()
		if name == cgroupfs || strings.HasSuffix(name, systemdSuffix) {
			found = path
			return filepath.SkipAll
		}
		return nil
	})
	return found
}

func isDir(path string) bool {
	info, err := os.Stat(path)
	return err == nil && info.IsDir()
}

// CgroupID returns the cgroup v2 id of the cgroup directory at path: the id
// that bpf_get_current_cgroup_id() and bpf_get_current_ancestor_cgroup_id()
// return for tasks in that cgroup.
func CgroupID(path string) (uint64, error) {
	handle, _, err := unix.NameToHandleAt(unix.AT_FDCWD, path, 0)
	if err == nil && handle.Size() == 8 {
		return binary.NativeEndian.Uint64(handle.Bytes()), nil
	}

	// Kernfs inode numbers equal cgroup ids on 64-bit kernels.
	var st unix.Stat_t
	if statErr := unix.Stat(path, &st); statErr != nil {
		return 0, fmt.Errorf("read cgroup id of %s: %w", path, errors.Join(err, statErr))
	}
	return st.Ino, nil
}
