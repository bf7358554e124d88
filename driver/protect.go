package driver

import (
	"context"
	"log/slog"

	"github.com/phantom-sec/phantom/pkg/satoken"
)

// Protector registers published volumes with the runtime-protection
// monitor. *protect.Protector implements it.
type Protector interface {
	Protect(ctx context.Context, pod satoken.Pod, volumeID, target string) error
	Unprotect(volumeID string) error
}

// protect registers a mounted volume with the monitor. A failure is logged
// and never fails the publish: the volume is retried at its next
// republish, for example when the pod's cgroup did not exist yet.
func (d *Driver) protect(ctx context.Context, log *slog.Logger, vol *volume) {
	if d.cfg.Protector == nil || vol.protected || !vol.mounted {
		return
	}
	if err := d.cfg.Protector.Protect(ctx, vol.pod, vol.id, vol.target); err != nil {
		d.metrics.protectErrors.Inc()
		if !vol.protectWarned {
			log.Warn("volume not protected by the runtime-protection monitor; retrying at the next republish", logKeyError, err.Error())
			vol.protectWarned = true
		}
		return
	}
	vol.protected = true
}

// unprotect removes a volume from the monitor before its unmount.
func (d *Driver) unprotect(log *slog.Logger, volumeID string) {
	if d.cfg.Protector == nil {
		return
	}
	if err := d.cfg.Protector.Unprotect(volumeID); err != nil {
		d.metrics.protectErrors.Inc()
		log.Warn("failed to remove the volume from the runtime-protection monitor", logKeyError, err.Error())
	}
}
