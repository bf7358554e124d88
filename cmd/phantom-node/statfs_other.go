//go:build !linux

package main

import "fmt"

func memoryFilesystem(dir string) (string, error) {
	return "", fmt.Errorf("%s: checking the filesystem type is supported on Linux only: %w", dir, errNotMemory)
}
