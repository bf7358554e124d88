//go:build !linux

package sovereignty

import "errors"

var errUnsupported = errors.New("scanning mounts is supported on Linux only")

func mountPolicy(string) (string, bool, string, error) {
	return "", false, "", errUnsupported
}

func deviceOf(string) (uint64, error) {
	return 0, errUnsupported
}
