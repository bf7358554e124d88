package driver

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/phantom-sec/phantom/pkg/bao"
	"github.com/phantom-sec/phantom/pkg/satoken"
	"github.com/phantom-sec/phantom/pkg/spec"
	"github.com/phantom-sec/phantom/pkg/state"
)

// Recover takes over the volumes of an earlier run of the daemon from the
// index. A volume whose target is still a Phantom mount is resumed: its
// leases are renewed and its content rotated as before, and its first
// republish checks its files. A volume whose target is not mounted is kept
// only while its pod's volume directory exists, because kubelet then
// retries the publish. Otherwise its record is dropped and its leases
// expire at their TTL. Call Recover once, before Serve.
func (d *Driver) Recover(ctx context.Context) error {
	if d.cfg.Index == nil {
		return nil
	}
	records, err := d.cfg.Index.List()
	if err != nil {
		d.log.Warn("dropped unreadable records from the volume index", logKeyError, err.Error())
	}
	mounted, err := d.cfg.Mounter.List()
	if err != nil {
		return err
	}
	isMounted := make(map[string]bool, len(mounted))
	for _, target := range mounted {
		isMounted[target] = true
	}

	for _, r := range records {
		d.recoverVolume(r, isMounted[r.Target])
	}
	d.metrics.leases.Set(float64(d.volumes.leaseCount()))
	return nil
}

func (d *Driver) recoverVolume(r *state.Record, mounted bool) {
	log := d.log.With(logKeyVolume, r.VolumeID, logKeyTarget, r.Target, logKeyNamespace, r.Namespace, logKeyPod, r.PodName)
	if !mounted && !parentExists(r.Target) {
		log.Info("dropping the index record of a volume whose pod is gone; its leases expire at their TTL", "leases", len(r.Leases))
		d.deleteIndex(log, r.VolumeID)
		return
	}
	vol, err := d.volumeFromRecord(r)
	if err != nil {
		log.Warn("dropping an index record whose volume attributes no longer parse", logKeyError, err.Error())
		d.deleteIndex(log, r.VolumeID)
		return
	}
	vol.mounted = mounted
	d.protect(context.Background(), log, vol)

	d.metrics.volumes.Set(float64(d.volumes.put(vol)))
	d.scheduler.schedule(vol.id, d.nextDue(vol))
	d.metrics.recovered.Inc()
	log.Info("volume recovered from the index", "mounted", mounted, "leases", len(vol.leases))
}

// volumeFromRecord rebuilds a volume and loads its leases' secrets from the
// sealed cache. The volume is degraded, so its first chance rewrites the
// files from what it holds: a daemon killed in the middle of a publish or
// rotation leaves them consistent again.
func (d *Driver) volumeFromRecord(r *state.Record) (*volume, error) {
	s, err := spec.Parse(r.Attributes)
	if err != nil {
		return nil, err
	}
	refresh := d.cfg.RefreshInterval
	if s.RefreshInterval > 0 {
		refresh = s.RefreshInterval
	}
	vol := &volume{
		id: r.VolumeID, target: r.Target,
		pod:      satoken.Pod{Namespace: r.Namespace, Name: r.PodName, UID: r.PodUID, ServiceAccount: r.ServiceAccount},
		identity: bao.Identity{Namespace: r.Namespace, ServiceAccount: r.ServiceAccount, Role: r.Role},
		spec:     s, attrs: r.Attributes, specHash: r.SpecHash,
		readOnly: r.ReadOnly, gid: r.GID, maxBytes: r.MaxBytes,
		refresh: refresh, refreshedAt: r.RefreshedAt, degraded: true,
	}
	for _, l := range r.Leases {
		held := &heldLease{Lease: l}
		if entry, _, ok := d.cfg.Cache.Stale(vol.identity, keyLease+l.ID); ok {
			held.secret = entry.Secret
		}
		vol.setLeases(append(vol.leases, held))
	}
	return vol, nil
}

// parentExists reports whether the directory holding target exists:
// kubelet creates it for the pod's volume and removes it with the pod.
func parentExists(target string) bool {
	_, err := os.Stat(filepath.Dir(target))
	return !errors.Is(err, fs.ErrNotExist)
}
