package monitor

import (
	"errors"
	"fmt"
	"log/slog"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// RegisterPod protects the pod's processes: accesses from outside its
// cgroup are recorded, and denied in ModeEnforce. Registering a UID again
// updates its mode and cgroup (kubelet republishes about every minute).
// A returned error leaves protection off for this pod; publishing should go
// on.
func (m *Monitor) RegisterPod(p Pod) error {
	if err := p.validate(); err != nil {
		return err
	}
	if p.Mode == "" {
		p.Mode = ModeAudit
	}
	if m.obj == nil {
		return ErrDisabled
	}

	m.mu.Lock()
	defer m.mu.Unlock()

	old, known := m.pods[p.UID]
	value := lsmPhantomPod{Mode: modeCode(p.Mode), Level: uint32(p.CgroupLevel)}
	if err := m.obj.pods.Put(p.CgroupID, value); err != nil {
		m.metrics.errors.WithLabelValues(reasonRegister).Inc()
		return fmt.Errorf("register pod %s/%s (uid %s): update pod map: %w", p.Namespace, p.Name, p.UID, err)
	}
	if known && old.CgroupID != p.CgroupID {
		if err := m.obj.pods.Delete(old.CgroupID); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			m.log.Warn("remove stale pod cgroup", slog.String("pod_uid", p.UID), slog.Uint64("cgroup_id", old.CgroupID), slog.Any("error", err))
		}
		delete(m.byCgroup, old.CgroupID)
		if err := m.moveVolumes(p.UID, p.CgroupID); err != nil {
			return err
		}
	}
	m.pods[p.UID] = p
	m.byCgroup[p.CgroupID] = p.UID
	m.metrics.pods.Set(float64(len(m.pods)))
	if !known || old != p {
		m.log.Info("pod protected", slog.String("pod_namespace", p.Namespace), slog.String("pod_name", p.Name),
			slog.String("pod_uid", p.UID), slog.Uint64("cgroup_id", p.CgroupID), slog.Int("cgroup_level", p.CgroupLevel),
			slog.String("mode", string(p.Mode)))
	}
	return nil
}

// moveVolumes points the pod's volumes at its new cgroup. Callers hold m.mu.
func (m *Monitor) moveVolumes(uid string, cgroupID uint64) error {
	for dev, owner := range m.volumes {
		if owner != uid {
			continue
		}
		if err := m.obj.volumes.Put(dev, lsmPhantomVolume{PodCgroup: cgroupID}); err != nil {
			m.metrics.errors.WithLabelValues(reasonRegister).Inc()
			return fmt.Errorf("move volume %d:%d of pod %s: %w", dev>>20, dev&0xfffff, uid, err)
		}
	}
	return nil
}

// UnregisterPod ends protection of the pod and of its volumes. Unknown UIDs
// are ignored, so unpublish may call it more than once.
func (m *Monitor) UnregisterPod(uid string) error {
	if m.obj == nil {
		return ErrDisabled
	}

	m.mu.Lock()
	defer m.mu.Unlock()

	p, ok := m.pods[uid]
	if !ok {
		return nil
	}
	var errs []error
	for dev, owner := range m.volumes {
		if owner == uid {
			errs = append(errs, m.deleteVolume(dev))
		}
	}
	if err := m.obj.pods.Delete(p.CgroupID); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		errs = append(errs, fmt.Errorf("delete pod map entry: %w", err))
	}
	delete(m.pods, uid)
	delete(m.byCgroup, p.CgroupID)
	m.metrics.pods.Set(float64(len(m.pods)))
	errs = append(errs, m.writeFilter())
	if err := errors.Join(errs...); err != nil {
		m.metrics.errors.WithLabelValues(reasonRegister).Inc()
		return fmt.Errorf("unregister pod %s: %w", uid, err)
	}
	m.log.Info("pod protection ended", slog.String("pod_uid", uid))
	return nil
}

// RegisterVolume protects the files of the tmpfs whose device number, as
// stat(2) reports it in st_dev, is dev. The pod must be registered first.
// Each Phantom volume is its own tmpfs superblock, so the device alone names
// the volume, and stays valid when a rotation replaces the files.
func (m *Monitor) RegisterVolume(podUID string, dev uint64) error {
	if dev == 0 {
		return errors.New("register volume: device number is 0: pass st_dev of the volume's mount point")
	}
	if m.obj == nil {
		return ErrDisabled
	}
	kdev := kernelDev(dev)

	m.mu.Lock()
	defer m.mu.Unlock()

	p, ok := m.pods[podUID]
	if !ok {
		return fmt.Errorf("register volume %d:%d: pod %s: %w", unix.Major(dev), unix.Minor(dev), podUID, ErrPodNotRegistered)
	}
	if err := m.obj.volumes.Put(kdev, lsmPhantomVolume{PodCgroup: p.CgroupID}); err != nil {
		m.metrics.errors.WithLabelValues(reasonRegister).Inc()
		return fmt.Errorf("register volume %d:%d of pod %s: %w", unix.Major(dev), unix.Minor(dev), podUID, err)
	}
	_, known := m.volumes[kdev]
	m.volumes[kdev] = podUID
	if err := m.writeFilter(); err != nil {
		m.metrics.errors.WithLabelValues(reasonRegister).Inc()
		return fmt.Errorf("register volume %d:%d of pod %s: %w", unix.Major(dev), unix.Minor(dev), podUID, err)
	}
	m.metrics.volumes.Set(float64(len(m.volumes)))
	if !known {
		m.log.Info("volume protected", slog.String("pod_uid", podUID),
			slog.String("device", fmt.Sprintf("%d:%d", unix.Major(dev), unix.Minor(dev))))
	}
	return nil
}

// UnregisterVolume ends protection of the volume with device number dev.
// Unknown devices are ignored.
func (m *Monitor) UnregisterVolume(dev uint64) error {
	if m.obj == nil {
		return ErrDisabled
	}
	kdev := kernelDev(dev)

	m.mu.Lock()
	defer m.mu.Unlock()

	if _, ok := m.volumes[kdev]; !ok {
		return nil
	}
	if err := errors.Join(m.deleteVolume(kdev), m.writeFilter()); err != nil {
		m.metrics.errors.WithLabelValues(reasonRegister).Inc()
		return fmt.Errorf("unregister volume %d:%d: %w", unix.Major(dev), unix.Minor(dev), err)
	}
	return nil
}

// deleteVolume removes a volume from the map and m.volumes. Callers hold
// m.mu and rewrite the filter afterwards.
func (m *Monitor) deleteVolume(kdev uint32) error {
	delete(m.volumes, kdev)
	m.metrics.volumes.Set(float64(len(m.volumes)))
	if err := m.obj.volumes.Delete(kdev); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("delete volume map entry %d:%d: %w", kdev>>20, kdev&0xfffff, err)
	}
	return nil
}

// writeFilter rebuilds the in-kernel device prefilter from m.volumes.
// Callers hold m.mu.
func (m *Monitor) writeFilter() error {
	var filter [volumeFilterWords]uint64
	for kdev := range m.volumes {
		filter[(kdev>>6)%volumeFilterWords] |= 1 << (kdev & 63)
	}
	if err := m.obj.filter.Set(filter); err != nil {
		return fmt.Errorf("write volume filter: %w", err)
	}
	return nil
}

func modeCode(mode Mode) uint32 {
	if mode == ModeEnforce {
		return 1 // PHANTOM_MODE_ENFORCE
	}
	return 0 // PHANTOM_MODE_AUDIT
}

// kernelDev converts a device number from stat(2) to the kernel's internal
// dev_t, which the programs read from struct super_block.s_dev.
func kernelDev(dev uint64) uint32 {
	return unix.Major(dev)<<20 | unix.Minor(dev)&0xfffff
}

// userDev converts a kernel dev_t back to the stat(2) encoding.
func userDev(kdev uint32) uint64 {
	return unix.Mkdev(kdev>>20, kdev&0xfffff)
}
