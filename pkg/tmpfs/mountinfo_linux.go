package tmpfs

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strconv"
	"strings"

	"k8s.io/mount-utils"
)

// mountInfoPath lists the mounts of the calling process's mount namespace.
const mountInfoPath = "/proc/self/mountinfo"

// mountState classifies what is mounted at a path.
type mountState int

const (
	// notMounted means no mount point is at the path.
	notMounted mountState = iota
	// phantomMounted means the topmost mount at the path is a Phantom tmpfs.
	phantomMounted
	// foreignMounted means the topmost mount at the path is something else.
	foreignMounted
)

// readMountInfo parses the mount table of the calling process.
func readMountInfo() ([]mount.MountInfo, error) {
	infos, err := mount.ParseMountInfo(mountInfoPath)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", mountInfoPath, err)
	}
	return infos, nil
}

// isPhantom reports whether a mount is a whole Phantom tmpfs, as opposed to
// another tmpfs or a bind mount of a subdirectory of one.
func isPhantom(info mount.MountInfo) bool {
	return info.FsType == "tmpfs" && info.Source == Source && info.Root == "/"
}

// topMountAt returns the topmost of the mounts whose mount point is target.
// When mounts are stacked on one path, each one's parent is the mount below
// it, so the topmost is the one that is no other's parent.
func topMountAt(infos []mount.MountInfo, target string) (mount.MountInfo, bool) {
	var stack []mount.MountInfo
	for _, info := range infos {
		if unescapeMountPath(info.MountPoint) == target {
			stack = append(stack, info)
		}
	}

	for _, candidate := range stack {
		covered := false
		for _, other := range stack {
			if other.ParentID == candidate.ID && other.ID != candidate.ID {
				covered = true
				break
			}
		}
		if !covered {
			return candidate, true
		}
	}
	return mount.MountInfo{}, false
}

// stateAt classifies the topmost mount at target, a canonical path.
func stateAt(target string) (mountState, mount.MountInfo, error) {
	infos, err := readMountInfo()
	if err != nil {
		return notMounted, mount.MountInfo{}, err
	}

	top, ok := topMountAt(infos, target)
	switch {
	case !ok:
		return notMounted, mount.MountInfo{}, nil
	case isPhantom(top):
		return phantomMounted, top, nil
	default:
		return foreignMounted, top, nil
	}
}

// unescapeMountPath decodes the octal escapes (\040 for a space, \011, \012
// and \134) that the kernel writes into mount points in mountinfo.
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}

	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// canonicalPath returns target as the kernel writes it in mountinfo: absolute,
// cleaned, and with symlinks in its parent directories resolved. The last
// segment is not resolved, so a symlink at target stays a symlink and is
// rejected by the callers that need a directory.
func canonicalPath(target string) (string, error) {
	if !filepath.IsAbs(target) {
		return "", fmt.Errorf("%w: target path %q is relative; pass the absolute path from the CSI request", ErrInvalidOptions, target)
	}

	cleaned := filepath.Clean(target)
	parent, base := filepath.Split(cleaned)
	if base == "" {
		return "", fmt.Errorf("%w: target path %q is the root directory; pass the volume's target path", ErrInvalidOptions, target)
	}

	resolved, err := filepath.EvalSymlinks(parent)
	if errors.Is(err, fs.ErrNotExist) {
		return cleaned, nil
	}
	if err != nil {
		return "", fmt.Errorf("resolve parent directory of %s: %w", cleaned, err)
	}
	return filepath.Join(resolved, base), nil
}
