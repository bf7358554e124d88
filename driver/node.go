package driver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"strconv"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/phantom-sec/phantom/pkg/satoken"
	"github.com/phantom-sec/phantom/pkg/secret"
	"github.com/phantom-sec/phantom/pkg/spec"
)

// publishRequest is a validated NodePublishVolumeRequest.
type publishRequest struct {
	volumeID string
	target   string
	readOnly bool
	gid      *int64
	pod      satoken.Pod
	spec     *spec.Spec
	// attrs are the volume attributes without kubelet's tokens; specHash
	// identifies them.
	attrs    map[string]string
	specHash string
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
	case !filepath.IsAbs(req.GetTargetPath()):
		return nil, toStatus(invalidRequestf("target_path %q is not absolute", req.GetTargetPath()))
	}
	log := d.log.With(logKeyVolume, req.GetVolumeId(), logKeyTarget, req.GetTargetPath())

	unlock := d.volumes.lock(req.GetVolumeId())
	defer unlock()

	d.unprotect(log, req.GetVolumeId())
	err := d.cfg.Mounter.Unmount(req.GetTargetPath())
	d.metrics.observeUnpublish(err)
	if err != nil {
		return nil, toStatus(err)
	}

	if vol, ok := d.volumes.get(req.GetVolumeId()); ok {
		d.revokeLeases(ctx, log, vol.identity, vol.leases)
		d.scheduler.cancel(vol.id)
		d.metrics.volumes.Set(float64(d.volumes.delete(vol.id)))
		d.metrics.leases.Set(float64(d.volumes.leaseCount()))
	}
	d.deleteIndex(log, req.GetVolumeId())
	log.Info("volume unpublished")
	return &csi.NodeUnpublishVolumeResponse{}, nil
}

// parsePublish checks every field of the request. Errors name the field
// and the change that fixes it.
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

	stored := maps.Clone(attrs)
	delete(stored, spec.KubeletTokens)
	return &publishRequest{
		volumeID: req.GetVolumeId(),
		target:   req.GetTargetPath(),
		readOnly: req.GetReadonly(),
		gid:      gid,
		pod:      pod,
		spec:     s,
		attrs:    stored,
		specHash: hashAttributes(stored, req.GetReadonly(), gid, maxBytes),
		token:    token,
		maxBytes: maxBytes,
	}, nil
}

// hashAttributes identifies what a volume was published with, tokens
// excluded, so a republish with other settings is a new publish.
func hashAttributes(attrs map[string]string, readOnly bool, gid *int64, maxBytes int64) string {
	encoded, _ := json.Marshal(struct {
		Attrs    map[string]string
		ReadOnly bool
		GID      *int64
		MaxBytes int64
	}{attrs, readOnly, gid, maxBytes}) // maps encode with sorted keys
	sum := sha256.Sum256(encoded)
	return hex.EncodeToString(sum[:])
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
