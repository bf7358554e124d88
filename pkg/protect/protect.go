// Package protect connects published Phantom volumes to the runtime
// protection monitor. At publish it registers the pod's cgroup, with the
// mode its namespace requests, and the volume's tmpfs device. At unpublish
// it removes them again.
package protect

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"github.com/phantom-sec/phantom/pkg/monitor"
	"github.com/phantom-sec/phantom/pkg/satoken"
)

// LabelMode is the namespace label that chooses the protection mode of the
// namespace's pods: "audit" or "enforce".
const LabelMode = "phantom.dev/runtime-protection"

// Monitor is the part of *monitor.Monitor this package uses.
type Monitor interface {
	RegisterPod(p monitor.Pod) error
	UnregisterPod(uid string) error
	RegisterVolume(podUID string, dev uint64) error
	UnregisterVolume(dev uint64) error
}

// ModeSource returns the protection mode a namespace requests, or "" when
// it sets none.
type ModeSource interface {
	NamespaceMode(ctx context.Context, namespace string) (monitor.Mode, error)
}

// Config configures a Protector.
type Config struct {
	Monitor Monitor
	// Modes reads the namespace label; nil applies Default everywhere.
	Modes ModeSource
	// Default is the mode of namespaces without the label.
	Default monitor.Mode
	// Device returns st_dev of the tmpfs mounted at a target path.
	Device func(target string) (uint64, error)
	// PodCgroup finds a pod's cgroup by UID; nil means monitor.PodCgroup.
	PodCgroup func(podUID string) (id uint64, level int, path string, err error)
	Logger    *slog.Logger
}

// Protector registers volumes and their pods with the monitor. A pod stays
// registered while at least one of its volumes is. It is safe for
// concurrent use.
type Protector struct {
	cfg Config

	mu      sync.Mutex
	volumes map[string]protectedVolume // by volume id
	pods    map[string]int             // volumes per pod UID
}

type protectedVolume struct {
	podUID string
	dev    uint64
}

// New returns a Protector.
func New(cfg Config) (*Protector, error) {
	if cfg.Monitor == nil || cfg.Device == nil {
		return nil, errors.New("protect: Monitor and Device are required")
	}
	if cfg.Default != monitor.ModeAudit && cfg.Default != monitor.ModeEnforce {
		return nil, fmt.Errorf("protect: default mode %q is not %q or %q", cfg.Default, monitor.ModeAudit, monitor.ModeEnforce)
	}
	if cfg.PodCgroup == nil {
		cfg.PodCgroup = monitor.PodCgroup
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Protector{cfg: cfg, volumes: make(map[string]protectedVolume), pods: make(map[string]int)}, nil
}

// Protect registers the volume mounted at target and, with its first
// volume, the pod. Calling it again for a protected volume does nothing.
func (p *Protector) Protect(ctx context.Context, pod satoken.Pod, volumeID, target string) error {
	p.mu.Lock()
	defer p.mu.Unlock()

	if _, ok := p.volumes[volumeID]; ok {
		return nil
	}
	dev, err := p.cfg.Device(target)
	if err != nil {
		return fmt.Errorf("protect volume %s: %w", volumeID, err)
	}
	if p.pods[pod.UID] == 0 {
		if err := p.registerPod(ctx, pod); err != nil {
			return err
		}
	}
	if err := p.cfg.Monitor.RegisterVolume(pod.UID, dev); err != nil {
		if p.pods[pod.UID] == 0 {
			_ = p.cfg.Monitor.UnregisterPod(pod.UID)
		}
		return fmt.Errorf("protect volume %s: %w", volumeID, err)
	}

	p.volumes[volumeID] = protectedVolume{podUID: pod.UID, dev: dev}
	p.pods[pod.UID]++
	return nil
}

// Unprotect removes the volume and, with its last volume, the pod. An
// unknown volume id is ignored.
func (p *Protector) Unprotect(volumeID string) error {
	p.mu.Lock()
	defer p.mu.Unlock()

	v, ok := p.volumes[volumeID]
	if !ok {
		return nil
	}
	delete(p.volumes, volumeID)
	p.pods[v.podUID]--

	var errs []error
	if err := p.cfg.Monitor.UnregisterVolume(v.dev); err != nil {
		errs = append(errs, fmt.Errorf("unprotect volume %s: %w", volumeID, err))
	}
	if p.pods[v.podUID] <= 0 {
		delete(p.pods, v.podUID)
		if err := p.cfg.Monitor.UnregisterPod(v.podUID); err != nil {
			errs = append(errs, fmt.Errorf("unprotect pod %s: %w", v.podUID, err))
		}
	}
	return errors.Join(errs...)
}

func (p *Protector) registerPod(ctx context.Context, pod satoken.Pod) error {
	mode := p.cfg.Default
	if p.cfg.Modes != nil {
		nsMode, err := p.cfg.Modes.NamespaceMode(ctx, pod.Namespace)
		if err != nil {
			p.cfg.Logger.Warn("failed to read the namespace's runtime-protection label; using the default mode",
				"namespace", pod.Namespace, "mode", mode, "error", err.Error())
		} else if nsMode != "" {
			mode = nsMode
		}
	}

	id, level, _, err := p.cfg.PodCgroup(pod.UID)
	if err != nil {
		return fmt.Errorf("protect pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	err = p.cfg.Monitor.RegisterPod(monitor.Pod{
		Namespace: pod.Namespace, Name: pod.Name, UID: pod.UID, CgroupID: id, CgroupLevel: level, Mode: mode,
	})
	if err != nil {
		return fmt.Errorf("protect pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return nil
}

// ParseMode parses a protection mode as the namespace label and the
// --runtime-protection flag spell it.
func ParseMode(value string) (monitor.Mode, error) {
	switch monitor.Mode(value) {
	case monitor.ModeAudit, monitor.ModeEnforce:
		return monitor.Mode(value), nil
	default:
		return "", fmt.Errorf("runtime-protection mode %q is not %q or %q", value, monitor.ModeAudit, monitor.ModeEnforce)
	}
}
