//go:build !linux

package setup

import "errors"

// EnsureTmpfs is supported on Linux only.
func EnsureTmpfs(string) error {
	return errors.New("mount tmpfs: the end-to-end cluster runs on Linux only")
}
