//go:build !linux

package setup

import (
	"context"
	"errors"

	"github.com/phantom-sec/phantom/tests/e2e/cluster"
)

// ForwardService is supported on Linux only.
func ForwardService(context.Context, *cluster.Cluster, string, string, int) error {
	return errors.New("forward a Service: the end-to-end cluster runs on Linux only")
}
