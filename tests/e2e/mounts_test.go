package e2e

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// hostMount is one line of the host's /proc/self/mountinfo.
type hostMount struct {
	fsType  string
	options []string // per-mount and super block options together
}

func (m hostMount) has(option string) bool {
	for _, o := range m.options {
		if o == option {
			return true
		}
	}
	return false
}

// volumeTarget returns the host path where kubelet has the driver mount
// the pod's Phantom volume.
func (s *suite) volumeTarget(pod *corev1.Pod) string {
	return filepath.Join(s.cluster.KubeletRootDir, "pods", string(pod.UID), "volumes", "kubernetes.io~csi", volumeName, "mount")
}

// mountAt returns the topmost mount at path in the test's mount namespace,
// which is the host's, or errNoMount.
func mountAt(path string) (hostMount, error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return hostMount{}, fmt.Errorf("read mountinfo: %w", err)
	}
	defer f.Close()

	var found *hostMount
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		// id parent major:minor root mountpoint options [optional...] - fstype source superoptions
		before, after, ok := strings.Cut(scanner.Text(), " - ")
		if !ok {
			continue
		}
		left, right := strings.Fields(before), strings.Fields(after)
		if len(left) < 6 || len(right) < 3 || left[4] != path {
			continue
		}
		options := append(strings.Split(left[5], ","), strings.Split(right[2], ",")...)
		found = &hostMount{fsType: right[0], options: options}
	}
	if err := scanner.Err(); err != nil {
		return hostMount{}, fmt.Errorf("read mountinfo: %w", err)
	}
	if found == nil {
		return hostMount{}, errNoMount
	}
	return *found, nil
}
