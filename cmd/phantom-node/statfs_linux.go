package main

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// memoryFilesystem returns the type of the memory filesystem dir is on, or
// an error wrapping errNotMemory.
func memoryFilesystem(dir string) (string, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return "", fmt.Errorf("statfs %s: %w", dir, err)
	}
	switch st.Type {
	case unix.TMPFS_MAGIC:
		return "tmpfs", nil
	case unix.RAMFS_MAGIC:
		return "ramfs", nil
	default:
		return "", fmt.Errorf("%s is on filesystem type %#x: %w", dir, st.Type, errNotMemory)
	}
}
