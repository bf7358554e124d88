package driver

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/phantom-sec/phantom/pkg/bao"
)

const (
	// retryDelay spaces attempts at background work that failed.
	retryDelay = 30 * time.Second
	// noSessionDelay waits for the pod's next republish, which brings a
	// token, when no OpenBao session is left for background work.
	noSessionDelay = time.Minute
)

// Rotation reasons, the `reason` label of phantom_rotations_total.
const (
	reasonKVChanged   = "kv_changed"
	reasonMaxTTL      = "lease_max_ttl"
	reasonExpired     = "lease_expired"
	reasonLeaseLost   = "lease_lost"
	reasonAfterOutage = "after_outage"
)

// due reports whether any refresh, renewal or rotation of vol is due. A
// republish ignores the retry delay of failed background work: it comes
// about once a minute, brings a token, and the breaker keeps it from
// calling an OpenBao that is down.
func (d *Driver) due(vol *volume, now time.Time) bool {
	return !now.Before(d.nextDue(vol))
}

// backgroundDue is when the background loop next works on vol: when it is
// due, but not before the retry delay of a failed attempt.
func (d *Driver) backgroundDue(vol *volume) time.Time {
	next := d.nextDue(vol)
	if vol.retryAt.After(next) {
		return vol.retryAt
	}
	return next
}

// nextDue returns when vol next needs work: a KV refresh at the refresh
// interval, a lease renewal or replacement at two thirds of the lease's
// current term, a degraded volume at once.
func (d *Driver) nextDue(vol *volume) time.Time {
	next := vol.refreshedAt.Add(vol.refresh)
	if vol.degraded {
		next = time.Time{}
	}
	for _, l := range vol.leases {
		if at := twoThirds(l); at.Before(next) {
			next = at
		}
		if l.lost || l.Retired {
			next = time.Time{}
		}
	}
	return next
}

// twoThirds is two thirds into the lease's current term.
func twoThirds(l *heldLease) time.Time {
	last := l.Issued
	if l.Renewed.After(last) {
		last = l.Renewed
	}
	return last.Add(l.Expires.Sub(last) * 2 / 3)
}

// replaceReason returns why the lease must be replaced by new credentials,
// or "" when renewing it is enough or nothing is due.
func replaceReason(l *heldLease, now time.Time) string {
	switch {
	case l.lost:
		return reasonLeaseLost
	case !now.Before(l.Expires):
		return reasonExpired
	case (l.Capped || !l.Renewable) && !now.Before(twoThirds(l)):
		return reasonMaxTTL
	default:
		return ""
	}
}

// rotate brings vol up to date with src. It renews due leases. When the KV
// refresh is due, a lease must be replaced or the volume is degraded, it
// reads the content again and swaps the files in if they changed. New
// leases are recorded before the files change and old ones revoked after,
// so the index never loses a lease whose credentials are in the files.
func (d *Driver) rotate(ctx context.Context, log *slog.Logger, vol *volume, src *source) error {
	now := d.cfg.Now()
	d.renewDue(ctx, log, vol, src, now)

	replace := make(map[string]string)
	for _, l := range vol.leases {
		if reason := replaceReason(l, now); reason != "" {
			replace[l.Key] = reason
			delete(src.held, l.Key)
		}
	}
	kvDue := !now.Before(vol.refreshedAt.Add(vol.refresh))
	if !kvDue && !vol.degraded && len(replace) == 0 && !hasRetired(vol) {
		d.saveIndex(log, vol)
		return nil
	}

	fetchCtx, cancel := context.WithTimeout(ctx, d.cfg.RequestTimeout)
	defer cancel()
	content, err := d.cfg.Fetcher.Fetch(fetchCtx, src, vol.identity, vol.spec)
	if err != nil {
		src.revokeUnused(ctx)
		vol.retryAt = now.Add(retryDelay)
		return err
	}
	retired := d.retire(vol, src, now, kvDue)
	d.saveIndex(log, vol)

	changed, err := d.writeFiles(vol, content.Files)
	if err != nil {
		vol.retryAt = now.Add(retryDelay)
		return err
	}
	d.revokeRetired(ctx, log, vol, retired)
	d.countRotation(log, vol, changed, kvDue, replace)
	vol.degraded, vol.retryAt = src.degraded, time.Time{}
	d.saveIndex(log, vol)
	return nil
}

// retire marks the leases replaced by src's new ones as retired and adds
// the new ones to vol.
func (d *Driver) retire(vol *volume, src *source, now time.Time, kvDue bool) []*heldLease {
	replacedKeys := make(map[string]bool, len(src.issued))
	for _, l := range src.issued {
		replacedKeys[l.Key] = true
	}
	var retired []*heldLease
	for _, l := range vol.leases {
		if replacedKeys[l.Key] || l.Retired {
			l.Retired = true
			retired = append(retired, l)
		}
	}
	vol.setLeases(append(vol.leases, src.issued...))
	src.issued = nil
	if kvDue || vol.degraded {
		// The time after the reads, not before: a copy cached by these
		// reads must be stale when the next refresh is due.
		vol.refreshedAt = d.cfg.Now()
	}
	return retired
}

// revokeRetired revokes retired leases and drops them from vol.
func (d *Driver) revokeRetired(ctx context.Context, log *slog.Logger, vol *volume, retired []*heldLease) {
	d.revokeLeases(ctx, log, vol.identity, retired)
	kept := vol.leases[:0]
	for _, l := range vol.leases {
		if !l.Retired {
			kept = append(kept, l)
		}
	}
	vol.setLeases(kept)
	d.metrics.leases.Set(float64(d.volumes.leaseCount()))
}

// renewDue renews each lease that is two thirds into its term. OpenBao
// caps a renewal at the lease's max TTL; a capped lease is replaced at two
// thirds of what is left instead of renewed again.
func (d *Driver) renewDue(ctx context.Context, log *slog.Logger, vol *volume, src *source, now time.Time) {
	for _, l := range vol.leases {
		if !l.Renewable || l.Capped || l.Retired || l.lost || now.Before(twoThirds(l)) || !now.Before(l.Expires) {
			continue
		}
		session, _, err := src.getSession(ctx)
		if err != nil {
			log.Debug("no session to renew leases", logKeyError, err.Error())
			return
		}
		granted, err := session.RenewLease(ctx, l.ID, l.TTL)
		switch {
		case err == nil:
			l.Renewed, l.Expires = now, now.Add(granted)
			l.Capped = granted < l.TTL
			d.metrics.renewals.WithLabelValues(renewResult(l.Capped)).Inc()
		case errors.Is(err, bao.ErrUnavailable):
			d.metrics.renewals.WithLabelValues("unavailable").Inc()
			log.Warn("lease renewal failed: OpenBao is unavailable; retrying", "lease_id", l.ID, logKeyError, err.Error())
			return
		default:
			l.lost = true
			d.metrics.renewals.WithLabelValues("failed").Inc()
			log.Warn("lease renewal rejected; replacing the credentials", "lease_id", l.ID, logKeyError, err.Error())
		}
	}
}

func (d *Driver) countRotation(log *slog.Logger, vol *volume, changed, kvDue bool, replace map[string]string) {
	for _, reason := range replace {
		d.metrics.rotations.WithLabelValues(reason).Inc()
	}
	switch {
	case changed && len(replace) == 0 && vol.degraded:
		d.metrics.rotations.WithLabelValues(reasonAfterOutage).Inc()
	case changed && len(replace) == 0 && kvDue:
		d.metrics.rotations.WithLabelValues(reasonKVChanged).Inc()
	}
	if changed {
		log.Info("volume content rotated", "replaced_leases", len(replace))
	}
}

// background is the scheduler's work for one volume between publishes,
// with the identity's cached (and renewed) OpenBao session.
func (d *Driver) background(ctx context.Context, volumeID string) {
	if volumeID == housekeeping {
		d.housekeep()
		return
	}
	unlock := d.volumes.lock(volumeID)
	defer unlock()
	vol, ok := d.volumes.get(volumeID)
	if !ok || !vol.mounted {
		return
	}
	log := d.log.With(logKeyVolume, vol.id, logKeyNamespace, vol.pod.Namespace, logKeyPod, vol.pod.Name)

	now := d.cfg.Now()
	due := !now.Before(d.backgroundDue(vol))
	if due && d.breakerAllows() {
		src := d.newSource(vol, "", true)
		src.noGrace = true
		err := d.rotate(ctx, log, vol, src)
		switch {
		case errors.Is(err, bao.ErrNoSession):
			vol.retryAt = now.Add(noSessionDelay)
			log.Debug("background rotation waits for the pod's next republish", logKeyError, err.Error())
		case err != nil:
			log.Warn("background rotation failed; retrying", logKeyError, err.Error())
		}
	} else if due {
		vol.retryAt = now.Add(retryDelay)
	}
	d.scheduler.schedule(vol.id, d.backgroundDue(vol))
}

func (d *Driver) breakerAllows() bool {
	return d.cfg.Breaker == nil || d.cfg.Breaker.Allow() == nil
}

// housekeep drops cached copies past their grace period.
func (d *Driver) housekeep() {
	if n := d.cfg.Cache.Sweep(); n > 0 {
		d.log.Debug("dropped expired cache entries", "entries", n)
	}
	d.scheduler.schedule(housekeeping, d.cfg.Now().Add(housekeepingInterval))
}

func hasRetired(vol *volume) bool {
	for _, l := range vol.leases {
		if l.Retired {
			return true
		}
	}
	return false
}

func renewResult(capped bool) string {
	if capped {
		return "capped"
	}
	return "ok"
}
