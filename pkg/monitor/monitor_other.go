//go:build !linux

package monitor

import "context"

// Monitor is unavailable outside Linux; every method returns ErrUnsupported.
type Monitor struct{}

// New returns ErrUnsupported outside Linux.
func New(Config) (*Monitor, error) { return nil, ErrUnsupported }

// Status reports PathDisabled outside Linux.
func (*Monitor) Status() Status {
	return Status{Path: PathDisabled, Reason: ErrUnsupported.Error()}
}

// RegisterPod returns ErrUnsupported outside Linux.
func (*Monitor) RegisterPod(Pod) error { return ErrUnsupported }

// UnregisterPod returns ErrUnsupported outside Linux.
func (*Monitor) UnregisterPod(string) error { return ErrUnsupported }

// RegisterVolume returns ErrUnsupported outside Linux.
func (*Monitor) RegisterVolume(string, uint64) error { return ErrUnsupported }

// UnregisterVolume returns ErrUnsupported outside Linux.
func (*Monitor) UnregisterVolume(uint64) error { return ErrUnsupported }

// Run returns ErrUnsupported outside Linux.
func (*Monitor) Run(context.Context) error { return ErrUnsupported }

// Close does nothing outside Linux.
func (*Monitor) Close() error { return nil }

// PodCgroup returns ErrUnsupported outside Linux.
func PodCgroup(string) (uint64, int, string, error) { return 0, 0, "", ErrUnsupported }

// CgroupV2Root returns ErrUnsupported outside Linux.
func CgroupV2Root() (string, error) { return "", ErrUnsupported }

// CgroupID returns ErrUnsupported outside Linux.
func CgroupID(string) (uint64, error) { return 0, ErrUnsupported }
