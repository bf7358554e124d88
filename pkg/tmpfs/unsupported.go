//go:build !linux

package tmpfs

import (
	"errors"
	"log/slog"
)

// errUnsupported is returned by every operation on systems other than Linux,
// because Phantom volumes depend on Linux tmpfs and mount semantics.
var errUnsupported = errors.New("phantom tmpfs volumes are supported on Linux only")

// Mounter mounts and unmounts Phantom tmpfs volumes. On this system every
// method returns an "unsupported" error.
type Mounter struct{}

// NewMounter returns a Mounter whose methods all fail on this system.
func NewMounter(*slog.Logger) *Mounter { return &Mounter{} }

// Mount returns an "unsupported" error.
func (*Mounter) Mount(string, MountOptions) (bool, error) { return false, errUnsupported }

// IsMounted returns an "unsupported" error.
func (*Mounter) IsMounted(string) (bool, error) { return false, errUnsupported }

// Unmount returns an "unsupported" error.
func (*Mounter) Unmount(string) error { return errUnsupported }

// List returns an "unsupported" error.
func (*Mounter) List() ([]string, error) { return nil, errUnsupported }

// Device returns an "unsupported" error.
func (*Mounter) Device(string) (uint64, error) { return 0, errUnsupported }

// SetReadOnly returns an "unsupported" error.
func (*Mounter) SetReadOnly(string, bool) error { return errUnsupported }

// WriteFiles returns an "unsupported" error.
func (*Mounter) WriteFiles(string, []File, WriteOptions, bool) (bool, error) {
	return false, errUnsupported
}

// KernelDevice returns 0 on this system.
func KernelDevice(uint64) uint32 { return 0 }

// Write returns an "unsupported" error.
func Write(string, []File, WriteOptions) (bool, error) { return false, errUnsupported }
