package driver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strconv"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/phantom-sec/phantom/pkg/bao"
	"github.com/phantom-sec/phantom/pkg/fetch"
	"github.com/phantom-sec/phantom/pkg/satoken"
	"github.com/phantom-sec/phantom/pkg/secret"
	"github.com/phantom-sec/phantom/pkg/spec"
	"github.com/phantom-sec/phantom/pkg/tmpfs"
)

// publishRequest is a validated NodePublishVolumeRequest.
type publishRequest struct {
	volumeID string
	target   string
	readOnly bool
	gid      *int64
	pod      satoken.Pod
	spec     *spec.Spec
	token    secret.String
	maxBytes int64
}

// NodeGetInfo returns the node id. Phantom volumes have no topology and no
// volume count limit beyond the node's memory.
func (d *Driver) NodeGetInfo(context.Context, *csi.NodeGetInfoRequest) (*csi.NodeGetInfoResponse, error) {
	return &csi.NodeGetInfoResponse{NodeId: d.cfg.NodeID}, nil
}

// NodeGetCapabilities reports VOLUME_MOUNT_GROUP: kubelet passes the pod's
// fsGroup, which becomes the group of the tmpfs, instead of changing file
// ownership itself after the mount.
func (d *Driver) NodeGetCapabilities(context.Context, *csi.NodeGetCapabilitiesRequest) (*csi.NodeGetCapabilitiesResponse, error) {
	return &csi.NodeGetCapabilitiesResponse{
		Capabilities: []*csi.NodeServiceCapability{{
			Type: &csi.NodeServiceCapability_Rpc{Rpc: &csi.NodeServiceCapability_RPC{
				Type: csi.NodeServiceCapability_RPC_VOLUME_MOUNT_GROUP,
			}},
		}},
	}, nil
}

// NodePublishVolume logs in to OpenBao with the pod's service-account
// token, reads the volume's secrets and writes them to a tmpfs at the
// target path. It is idempotent: a second call for the same target
// refreshes the files in place and never stacks a mount.
func (d *Driver) NodePublishVolume(ctx context.Context, req *csi.NodePublishVolumeRequest) (*csi.NodePublishVolumeResponse, error) {
	start := time.Now()
	log := d.log.With(logKeyVolume, req.GetVolumeId(), logKeyTarget, req.GetTargetPath())

	r, err := d.parsePublish(req)
	if err == nil {
		log = log.With(logKeyNamespace, r.pod.Namespace, logKeyPod, r.pod.Name)
		err = d.publish(ctx, log, r)
	}

	d.metrics.observePublish(err, time.Since(start))
	if err != nil {
		return nil, toStatus(err)
	}
	log.Debug("volume published", logKeyDuration, time.Since(start))
	return &csi.NodePublishVolumeResponse{}, nil
}

// NodeUnpublishVolume unmounts the tmpfs, removes the target directory and
// revokes the volume's leases. It succeeds when the target is already gone
// or not mounted.
func (d *Driver) NodeUnpublishVolume(ctx context.Context, req *csi.NodeUnpublishVolumeRequest) (*csi.NodeUnpublishVolumeResponse, error) {
	switch {
	case req.GetVolumeId() == "":
		return nil, toStatus(invalidRequestf("volume_id is missing"))
	case req.GetTargetPath() == "":
		return nil, toStatus(invalidRequestf("target_path is missing"))
	}
	log := d.log.With(logKeyVolume, req.GetVolumeId(), logKeyTarget, req.GetTargetPath())

	unlock := d.volumes.lock(req.GetVolumeId())
	defer unlock()

	err := d.cfg.Mounter.Unmount(req.GetTargetPath())
	d.metrics.observeUnpublish(err)
	if err != nil {
		return nil, toStatus(fmt.Errorf("unmount %s: %w", req.GetTargetPath(), err))
	}

	if vol, ok := d.volumes.get(req.GetVolumeId()); ok {
		d.revokeLeases(ctx, log, vol.identity, vol.leases)
		d.metrics.volumes.Set(float64(d.volumes.delete(vol.id)))
	}
	log.Info("volume unpublished")
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// parsePublish checks every field of the request. Errors name the field
// and say what to change.
func (d *Driver) parsePublish(req *csi.NodePublishVolumeRequest) (*publishRequest, error) {
	attrs := req.GetVolumeContext()
	switch {
	case req.GetVolumeId() == "":
		return nil, invalidRequestf("volume_id is missing")
	case req.GetTargetPath() == "":
		return nil, invalidRequestf("target_path is missing")
	case !filepath.IsAbs(req.GetTargetPath()):
		return nil, invalidRequestf("target_path %q is not absolute", req.GetTargetPath())
	case req.GetVolumeCapability() == nil:
		return nil, invalidRequestf("volume_capability is missing")
	case req.GetVolumeCapability().GetBlock() != nil:
		return nil, invalidRequestf("volume_capability requests a block volume: Phantom volumes are filesystem mounts only")
	case req.GetVolumeCapability().GetMount() == nil:
		return nil, invalidRequestf("volume_capability has no mount access type")
	case attrs[spec.KubeletEphemeral] != "true":
		return nil, invalidRequestf("volume is not an inline ephemeral volume (%s=%q): declare it as a csi volume in the pod spec; Phantom does not serve PersistentVolumes",
			spec.KubeletEphemeral, attrs[spec.KubeletEphemeral])
	}

	pod := satoken.Pod{
		Namespace:      attrs[spec.KubeletPodNamespace],
		Name:           attrs[spec.KubeletPodName],
		UID:            attrs[spec.KubeletPodUID],
		ServiceAccount: attrs[spec.KubeletServiceAccount],
	}
	for key, value := range map[string]string{
		spec.KubeletPodNamespace: pod.Namespace, spec.KubeletPodName: pod.Name,
		spec.KubeletPodUID: pod.UID, spec.KubeletServiceAccount: pod.ServiceAccount,
	} {
		if value == "" {
			return nil, invalidRequestf("volume context has no %q: set podInfoOnMount: true on the CSIDriver %s", key, d.cfg.Name)
		}
	}

	s, err := spec.Parse(attrs)
	if err != nil {
		return nil, err
	}
	maxBytes := d.cfg.MaxVolumeBytes
	if s.SizeLimit > 0 {
		if s.SizeLimit > maxBytes {
			return nil, fmt.Errorf("%w: attribute %q is %d bytes, more than the node's limit of %d bytes: lower it",
				spec.ErrInvalid, spec.AttrSizeLimit, s.SizeLimit, maxBytes)
		}
		maxBytes = s.SizeLimit
	}

	gid, err := mountGroup(req.GetVolumeCapability().GetMount().GetVolumeMountGroup())
	if err != nil {
		return nil, err
	}

	token, err := satoken.FromRequest(attrs, req.GetSecrets(), d.cfg.Audience)
	if errors.Is(err, satoken.ErrNoToken) {
		return nil, fmt.Errorf("%w: add tokenRequests with audience %q to the CSIDriver %s", err, d.cfg.Audience, d.cfg.Name)
	}
	if err != nil {
		return nil, err
	}

	return &publishRequest{
		volumeID: req.GetVolumeId(),
		target:   req.GetTargetPath(),
		readOnly: req.GetReadonly(),
		gid:      gid,
		pod:      pod,
		spec:     s,
		token:    token,
		maxBytes: maxBytes,
	}, nil
}

// publish does the work of a validated request: check the token, read the
// secrets, then mount and write. Reading comes first, so a failing OpenBao
// leaves no mount and no partial files behind.
func (d *Driver) publish(ctx context.Context, log *slog.Logger, r *publishRequest) error {
	unlock := d.volumes.lock(r.volumeID)
	defer unlock()

	prev, republish := d.volumes.get(r.volumeID)
	if republish && prev.target != r.target {
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

	// Read as the pod.
	id := bao.Identity{Namespace: r.pod.Namespace, ServiceAccount: r.pod.ServiceAccount, Role: roleOf(r)}
	fetchCtx, cancel := context.WithTimeout(ctx, d.cfg.RequestTimeout)
	defer cancel()
	var content *fetch.Result
	err = d.cfg.Sessions.WithSession(fetchCtx, id, r.token, func(session *bao.Session) error {
		var err error
		content, err = d.cfg.Fetcher.Fetch(fetchCtx, session, id, r.spec)
		return err
	})
	if err != nil {
		return fmt.Errorf("read secrets for pod %s/%s as OpenBao role %q: %w", r.pod.Namespace, r.pod.Name, id.Role, err)
	}

	// Mount (once) and swap the files in atomically.
	created, err := d.cfg.Mounter.Mount(r.target, tmpfs.MountOptions{SizeBytes: r.maxBytes, GID: r.gid})
	if err != nil {
		d.revokeLeases(ctx, log, id, content.Leases)
		return fmt.Errorf("mount tmpfs at %s: %w", r.target, err)
	}
	changed, err := d.cfg.Mounter.WriteFiles(r.target, content.Files, tmpfs.WriteOptions{GID: r.gid, MaxBytes: r.maxBytes}, r.readOnly)
	if err != nil {
		d.revokeLeases(ctx, log, id, content.Leases)
		if created {
			if cleanupErr := d.cfg.Mounter.Unmount(r.target); cleanupErr != nil {
				log.Error("failed to remove the mount of a failed publish", logKeyError, cleanupErr.Error())
			}
		}
		return fmt.Errorf("write files to %s: %w", r.target, err)
	}

	// Replace the record; leases of the previous content are no longer used.
	vol := &volume{
		id: r.volumeID, target: r.target, pod: r.pod, identity: id,
		readOnly: r.readOnly, leases: content.Leases, published: d.cfg.Now(),
	}
	d.metrics.volumes.Set(float64(d.volumes.put(vol)))
	if republish {
		// NOTE: dynamic secrets are read again on every republish, so
		// their credentials change each time kubelet republishes.
		d.revokeLeases(ctx, log, id, prev.leases)
	}

	switch {
	case !republish:
		log.Info("volume published", logKeyFiles, len(content.Files))
	case changed:
		log.Info("volume content updated", logKeyFiles, len(content.Files))
	}
	return nil
}

// revokeLeases revokes leases with the identity's cached session. Without
// one (its token expired), the leases run out at their TTL.
func (d *Driver) revokeLeases(ctx context.Context, log *slog.Logger, id bao.Identity, leases []fetch.Lease) {
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
		}
	}
}

func roleOf(r *publishRequest) string {
	if r.spec.Role != "" {
		return r.spec.Role
	}
	return r.pod.Namespace + "-" + r.pod.ServiceAccount
}

func mountGroup(value string) (*int64, error) {
	if value == "" {
		return nil, nil
	}
	gid, err := strconv.ParseInt(value, 10, 64)
	if err != nil || gid < 0 || gid > 1<<31-1 {
		return nil, invalidRequestf("volume_mount_group %q is not a numeric group id", value)
	}
	return &gid, nil
}
