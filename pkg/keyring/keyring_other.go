//go:build !linux

package keyring

import "errors"

// ErrWrongSize means a key with the name exists but holds a payload of
// another size.
var ErrWrongSize = errors.New("key in the kernel keyring has the wrong size")

var errUnsupported = errors.New("the kernel keyring is supported on Linux only")

// LoadOrCreate returns an error: the kernel keyring is Linux only.
func LoadOrCreate(string, int) ([]byte, bool, error) { return nil, false, errUnsupported }

// Remove returns an error: the kernel keyring is Linux only.
func Remove(string) error { return errUnsupported }
