package driver

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/phantom-sec/phantom/pkg/bao"
	"github.com/phantom-sec/phantom/pkg/fetch"
	"github.com/phantom-sec/phantom/pkg/secret"
)

const (
	// deadlineMargin is kept free of a kubelet call's deadline, so a publish
	// that waited for OpenBao still returns Unavailable rather than running
	// into DeadlineExceeded.
	deadlineMargin = 2 * time.Second
	// retryPause separates attempts while the breaker is still closed.
	retryPause = 200 * time.Millisecond
)

// fetchContent reads a new volume's content. When OpenBao is unavailable
// and some item has no cached copy, it waits for the circuit breaker to
// close, up to OutageWait and within the call's deadline, and tries again.
func (d *Driver) fetchContent(ctx context.Context, vol *volume, token secret.String, verified bool) (*fetch.Result, *source, error) {
	deadline := d.waitDeadline(ctx)
	for {
		src := d.newSource(vol, token, verified)
		attemptCtx, cancel := context.WithTimeout(ctx, d.cfg.RequestTimeout)
		content, err := d.cfg.Fetcher.Fetch(attemptCtx, src, vol.identity, vol.spec)
		cancel()
		if err == nil {
			return content, src, nil
		}
		src.revokeUnused(ctx)
		if !errors.Is(err, bao.ErrUnavailable) {
			return nil, nil, err
		}
		if !d.waitForOpenBao(ctx, deadline) {
			return nil, nil, d.unavailable(vol, src, err)
		}
	}
}

func (d *Driver) waitDeadline(ctx context.Context) time.Time {
	if d.cfg.Breaker == nil || d.cfg.OutageWait < 0 {
		return time.Time{}
	}
	deadline := time.Now().Add(d.cfg.OutageWait)
	if callDeadline, ok := ctx.Deadline(); ok && callDeadline.Add(-deadlineMargin).Before(deadline) {
		deadline = callDeadline.Add(-deadlineMargin)
	}
	return deadline
}

// waitForOpenBao waits until the breaker lets requests through again, and
// reports false once deadline passed.
func (d *Driver) waitForOpenBao(ctx context.Context, deadline time.Time) bool {
	if deadline.IsZero() || !time.Now().Before(deadline) {
		return false
	}
	waitCtx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	if err := d.cfg.Breaker.Wait(waitCtx); err != nil {
		return false
	}
	// The breaker is closed: either OpenBao is back or it has not failed
	// often enough to open yet. Pause so the second case does not spin.
	select {
	case <-time.After(retryPause):
		return time.Now().Before(deadline)
	case <-waitCtx.Done():
		return false
	}
}

// unavailable builds the error of a publish that could start neither from
// OpenBao nor from the cache: it names OpenBao, since when it fails, what
// was missing and what the user can do.
func (d *Driver) unavailable(vol *volume, src *source, cause error) error {
	since := d.cfg.Now()
	if d.cfg.Breaker != nil {
		if opened := d.cfg.Breaker.OpenSince(); !opened.IsZero() {
			since = opened
		}
	}

	var why string
	switch {
	case !src.verified:
		why = "the pod's service-account token could not be verified offline against the cluster's keys, so no cached copy may be served to it"
	case len(src.missing) > 0:
		why = fmt.Sprintf("this node holds no cached copy of %s for service account %s/%s (role %q) within the grace period of %s",
			strings.Join(src.missing, ", "), vol.identity.Namespace, vol.identity.ServiceAccount, vol.identity.Role, d.cfg.GracePeriod)
	default:
		why = fmt.Sprintf("this node holds no cached copy for service account %s/%s (role %q)",
			vol.identity.Namespace, vol.identity.ServiceAccount, vol.identity.Role)
	}
	return fmt.Errorf("OpenBao at %s unavailable since %s, and %s. kubelet retries, and the pod starts once OpenBao responds: check OpenBao (sys/health) and the network from node %s. Last error seen: %w",
		d.cfg.Bao.Address(), since.UTC().Format(time.RFC3339), why, d.cfg.NodeID, cause)
}
