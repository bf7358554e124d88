package driver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"

	"github.com/phantom-sec/phantom/pkg/bao"
	"github.com/phantom-sec/phantom/pkg/satoken"
	"github.com/phantom-sec/phantom/pkg/secret"
	"github.com/phantom-sec/phantom/pkg/tmpfs"
)

// publish does the work of a validated request: check the token, then
// publish a new volume or refresh a published one when it is due.
func (d *Driver) publish(ctx context.Context, log *slog.Logger, r *publishRequest) error {
	unlock := d.volumes.lock(r.volumeID)
	defer unlock()

	prev, known := d.volumes.get(r.volumeID)
	if known && prev.mounted && prev.target != r.target {
		return fmt.Errorf("%w: volume %s is published at %s, not %s", errTargetConflict, r.volumeID, prev.target, r.target)
	}

	// The token must be the pod's own, for the right audience, and valid.
	claims, err := satoken.Parse(r.token)
	if err != nil {
		return err
	}
	if err := claims.Check(r.pod, d.cfg.Audience, d.cfg.Now()); err != nil {
		return err
	}

	if known && prev.mounted && prev.specHash == r.specHash {
		return d.republish(ctx, log, prev, r)
	}
	return d.publishNew(ctx, log, r, claims, prev)
}

// publishNew reads the content, records the volume in the index, mounts
// and writes. Reading comes first, so a failing OpenBao leaves no mount
// and no partial files behind. The index record comes before the mount, so
// a daemon killed after mounting finds the volume and its leases.
func (d *Driver) publishNew(ctx context.Context, log *slog.Logger, r *publishRequest, claims *satoken.Claims, prev *volume) error {
	vol := d.newVolume(r, claims)
	verified := d.verify(ctx, log, r.token, vol)
	content, src, err := d.fetchContent(ctx, vol, r.token, verified)
	if err != nil {
		return fmt.Errorf("read secrets for pod %s/%s as OpenBao role %q: %w", r.pod.Namespace, r.pod.Name, vol.identity.Role, err)
	}
	vol.setLeases(src.issued)
	vol.degraded = src.degraded
	// The refresh clock starts after the reads, so the copies they cached
	// are stale when the next refresh is due.
	vol.refreshedAt = d.cfg.Now()
	d.saveIndex(log, vol)

	undo := func() {
		src.revokeUnused(ctx)
		if prev != nil {
			d.saveIndex(log, prev)
		} else {
			d.deleteIndex(log, vol.id)
		}
	}
	// The content may use up to maxBytes. A rotation holds the old and the
	// new content at once, and the old stays a few seconds for readers, so
	// the tmpfs itself gets room for three copies and a page per file.
	size := tmpfs.MinMountSize(r.maxBytes, 2*len(content.Files)+16)
	created, err := d.cfg.Mounter.Mount(r.target, tmpfs.MountOptions{SizeBytes: size, GID: r.gid})
	if err != nil {
		undo()
		return err
	}
	if _, err := d.writeFiles(vol, content.Files); err != nil {
		undo()
		if created {
			if cleanupErr := d.cfg.Mounter.Unmount(r.target); cleanupErr != nil {
				log.Error("failed to remove the mount of a failed publish", logKeyError, cleanupErr.Error())
			}
		}
		return err
	}

	vol.mounted = true
	d.protect(ctx, log, vol)
	d.metrics.volumes.Set(float64(d.volumes.put(vol)))
	if prev != nil {
		d.revokeLeases(ctx, log, prev.identity, prev.leases)
	}
	d.metrics.leases.Set(float64(d.volumes.leaseCount()))
	d.scheduler.schedule(vol.id, d.nextDue(vol))

	if src.grace > 0 {
		d.metrics.graceServed.Inc()
		log.Warn("volume published from cached copies past their expiry because OpenBao is unavailable; they are replaced once it responds",
			logKeyFiles, len(content.Files), "grace_copies", src.grace)
		return nil
	}
	log.Info("volume published", logKeyFiles, len(content.Files))
	return nil
}

// republish refreshes a published volume when a refresh, renewal or
// rotation is due, and does nothing otherwise: kubelet calls it about
// every minute. When OpenBao is unavailable the volume keeps its files.
func (d *Driver) republish(ctx context.Context, log *slog.Logger, vol *volume, r *publishRequest) error {
	d.protect(ctx, log, vol)
	if !d.due(vol, d.cfg.Now()) {
		return nil
	}

	verified := d.verify(ctx, log, r.token, vol)
	src := d.newSource(vol, r.token, verified)
	src.noGrace = true
	err := d.rotate(ctx, log, vol, src)
	d.scheduler.schedule(vol.id, d.backgroundDue(vol))
	if errors.Is(err, bao.ErrUnavailable) {
		log.Warn("volume content not refreshed: OpenBao is unavailable; the volume keeps its files", logKeyError, err.Error())
		return nil
	}
	if err != nil {
		return fmt.Errorf("refresh secrets for pod %s/%s as OpenBao role %q (the volume keeps its files): %w",
			r.pod.Namespace, r.pod.Name, vol.identity.Role, err)
	}
	return nil
}

// verify checks the pod's token offline. Only a verified pod may get the
// cached OpenBao session or cached copies; any other pod logs in, so that
// OpenBao verifies its token.
func (d *Driver) verify(ctx context.Context, log *slog.Logger, token secret.String, vol *volume) bool {
	if d.cfg.Verifier == nil {
		return false
	}
	claims, err := d.cfg.Verifier.Verify(ctx, token)
	if err == nil {
		err = claims.Check(vol.pod, d.cfg.Audience, d.cfg.Now())
	}
	if err != nil {
		log.Warn("pod token not verified offline: no cached copy or session is used for it", logKeyError, err.Error())
		return false
	}
	return true
}

func (d *Driver) newVolume(r *publishRequest, claims *satoken.Claims) *volume {
	refresh := d.cfg.RefreshInterval
	if r.spec.RefreshInterval > 0 {
		refresh = r.spec.RefreshInterval
	}
	return &volume{
		id: r.volumeID, target: r.target, pod: r.pod, saUID: claims.ServiceAccountUID,
		identity: bao.Identity{Namespace: r.pod.Namespace, ServiceAccount: r.pod.ServiceAccount, Role: roleOf(r)},
		spec:     r.spec, attrs: r.attrs, specHash: r.specHash,
		readOnly: r.readOnly, gid: r.gid, maxBytes: r.maxBytes,
		refresh: refresh, refreshedAt: d.cfg.Now(),
	}
}

// writeFiles swaps the volume's files in atomically.
func (d *Driver) writeFiles(vol *volume, files []tmpfs.File) (bool, error) {
	changed, err := d.cfg.Mounter.WriteFiles(vol.target, files, tmpfs.WriteOptions{GID: vol.gid, MaxBytes: vol.maxBytes}, vol.readOnly)
	if err != nil {
		return false, fmt.Errorf("write files to %s: %w", vol.target, err)
	}
	return changed, nil
}

// revokeLeases revokes leases with the identity's cached session. Without
// one (its token expired), the leases run out at their TTL.
func (d *Driver) revokeLeases(ctx context.Context, log *slog.Logger, id bao.Identity, leases []*heldLease) {
	if len(leases) == 0 {
		return
	}
	session := d.cfg.Sessions.Cached(id)
	if session == nil {
		log.Warn("no OpenBao session to revoke leases; they expire at their TTL", "leases", len(leases))
		return
	}
	for _, lease := range leases {
		if err := session.RevokeLease(ctx, lease.ID); err != nil {
			log.Warn("failed to revoke lease; it expires at its TTL", "lease_id", lease.ID, logKeyError, err.Error())
			continue
		}
		d.cfg.Cache.Delete(id, keyLease+lease.ID)
	}
}

func (d *Driver) saveIndex(log *slog.Logger, vol *volume) {
	if d.cfg.Index == nil {
		return
	}
	if err := d.cfg.Index.Put(vol.record()); err != nil {
		log.Error("failed to write the volume index; a restarted daemon will not resume this volume", logKeyError, err.Error())
	}
}

func (d *Driver) deleteIndex(log *slog.Logger, volumeID string) {
	if d.cfg.Index == nil {
		return
	}
	if err := d.cfg.Index.Delete(volumeID); err != nil {
		log.Warn("failed to delete the volume's index record", logKeyError, err.Error())
	}
}
