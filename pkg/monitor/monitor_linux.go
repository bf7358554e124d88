package monitor

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

const (
	corePatternFile      = "/proc/sys/kernel/core_pattern"
	defaultEventInterval = time.Minute
	volumeFilterWords    = 64 // PHANTOM_VOLUME_FILTER_WORDS in bpf/phantom.h
)

// Monitor runs the runtime-protection programs of one node. Its methods are
// safe for concurrent use.
type Monitor struct {
	cfg     Config
	log     *slog.Logger
	audit   *slog.Logger
	metrics *metrics
	status  Status
	obj     *objects // nil when disabled

	mu       sync.Mutex
	pods     map[string]Pod    // by UID
	byCgroup map[uint64]string // pod cgroup id to UID
	volumes  map[uint32]string // kernel dev_t to pod UID

	eventMu   sync.Mutex
	lastEvent map[eventKey]time.Time

	runMu  sync.Mutex
	reader *ringbuf.Reader
	closed bool
	lost   uint64
}

// eventKey groups events for Kubernetes Event rate limiting.
type eventKey struct {
	podUID string
	kind   string
	action string
	actor  uint32
}

// New loads and attaches the monitor's programs: the BPF LSM set when the
// kernel allows it, otherwise the syscall tracepoint set (Config.ForcePath
// picks one without fallback). It logs which path is active and why.
//
// When no program set can be loaded, New returns the error together with a
// usable Monitor whose Status().Path is PathDisabled, so the daemon can keep
// publishing volumes: its Register methods then return ErrDisabled and Run
// waits for its context. An invalid Config returns a nil Monitor.
func New(cfg Config) (*Monitor, error) {
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("configure runtime protection monitor: %w", err)
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.EventInterval == 0 {
		cfg.EventInterval = defaultEventInterval
	}
	m := &Monitor{
		cfg:       cfg,
		log:       cfg.Logger.With(slog.String("component", "monitor")),
		metrics:   newMetrics(cfg.Registerer),
		pods:      map[string]Pod{},
		byCgroup:  map[uint64]string{},
		volumes:   map[uint32]string{},
		lastEvent: map[eventKey]time.Time{},
	}
	m.audit = m.log
	if cfg.AuditLog != nil {
		m.audit = slog.New(slog.NewJSONHandler(cfg.AuditLog, nil))
	}

	m.status.CorePattern = m.auditCorePattern(corePatternFile)
	if err := rlimit.RemoveMemlock(); err != nil {
		m.log.Debug("raise memlock limit for eBPF maps", slog.Any("error", err))
	}

	err := m.load()
	m.metrics.setPath(m.status.Path)
	if err != nil {
		m.log.Error("runtime protection disabled: no eBPF program set could be loaded",
			slog.String("reason", m.status.Reason), slog.Any("error", err))
		return m, err
	}
	m.log.Info("runtime protection active",
		slog.String("path", string(m.status.Path)),
		slog.String("lsm_unavailable", m.status.Reason),
		slog.Int("programs", len(m.status.Programs)),
		slog.Any("missing_optional_hooks", m.obj.missing))
	for _, limit := range m.status.Limits {
		m.log.Warn("runtime protection coverage reduced", slog.String("limit", limit))
	}
	return m, nil
}

// load tries the permitted paths in order and records the outcome in
// m.status.
func (m *Monitor) load() error {
	tgid := uint32(os.Getpid())
	var lsmErr error

	if m.cfg.ForcePath != PathTracepoint {
		obj, err := m.loadLSM(tgid)
		if err == nil {
			m.activate(obj, "")
			return nil
		}
		lsmErr = err
		m.status.Reason = err.Error()
		if m.cfg.ForcePath == PathLSM {
			m.status.Path = PathDisabled
			return err
		}
		m.log.Info("BPF LSM path unavailable, falling back to syscall tracepoints", slog.String("reason", m.status.Reason))
	} else {
		m.status.Reason = "tracepoint path forced by configuration"
	}

	obj, err := m.loadTracepoints(tgid)
	if err != nil {
		m.status.Path = PathDisabled
		return errors.Join(lsmErr, err)
	}
	m.activate(obj, m.status.Reason)
	return nil
}

func (m *Monitor) activate(obj *objects, reason string) {
	m.obj = obj
	m.status.Path = obj.path
	m.status.Reason = reason
	m.status.Programs = slices.Clone(obj.programs)
}

func (m *Monitor) loadLSM(tgid uint32) (*objects, error) {
	if reason := lsmUnavailable(); reason != "" {
		return nil, errors.New(reason)
	}
	spec, err := loadLsm()
	if err != nil {
		return nil, err
	}
	obj, err := loadObjects(PathLSM, spec, lsmAttachments, map[string]any{"phantom_daemon_tgid": tgid}, m.cfg.ringBufferSize)
	if err != nil {
		m.countLoadError(err)
		return nil, errors.New(describeLSMError(err))
	}
	if err := obj.selfTest(); err != nil {
		obj.close()
		return nil, fmt.Errorf("BPF LSM self-test failed, the bpf LSM is probably inactive: %w", err)
	}
	return obj, nil
}

func (m *Monitor) loadTracepoints(tgid uint32) (*objects, error) {
	mounted, err := ensureTracefs()
	if err != nil {
		m.metrics.errors.WithLabelValues(reasonAttach).Inc()
		return nil, err
	}
	if mounted {
		m.log.Info("mounted tracefs for syscall tracepoints", slog.String("path", tracefsMountPath))
	}
	spec, err := loadTracepoint()
	if err != nil {
		return nil, err
	}
	obj, err := m.loadTracepointVariant(spec, tgid)
	if err != nil {
		m.countLoadError(err)
		return nil, err
	}
	if err := obj.selfTest(); err != nil {
		obj.close()
		return nil, fmt.Errorf("tracepoint self-test failed: %w", err)
	}
	return obj, nil
}

// tracepointVariant selects optional kernel features of the tracepoint
// programs. Kernels without a feature reject its branch in the verifier,
// so the loader tries the variants in order of preference.
type tracepointVariant struct {
	// fdAccess is phantom_fd_access in bpf/monitor_tracepoint.bpf.c: 2 reads
	// from descriptor to device with plain loads, 1 adds a probe read, 0
	// uses four probe reads. On Linux 6.18 level 2 costs about 35 ns less
	// per read and open than level 0 (BenchmarkOpenReadClose, bpf-ns/run).
	fdAccess uint32
	// taskKfuncs resolves the target pid of ptrace and process_vm_* with
	// bpf_task_from_vpid(); without it those hooks stay inactive.
	taskKfuncs bool
}

var tracepointVariants = []tracepointVariant{
	{fdAccess: 2, taskKfuncs: true},
	{fdAccess: 1, taskKfuncs: true},
	{fdAccess: 0, taskKfuncs: true},
	{fdAccess: 2, taskKfuncs: false},
	{fdAccess: 1, taskKfuncs: false},
	{fdAccess: 0, taskKfuncs: false},
}

// loadTracepointVariant loads the first variant the kernel accepts and
// records what a fallback variant leaves uncovered in m.status.Limits.
func (m *Monitor) loadTracepointVariant(spec *ebpf.CollectionSpec, tgid uint32) (*objects, error) {
	var errs []error
	for _, v := range tracepointVariants {
		if m.cfg.probeReadsOnly && v.fdAccess > 0 || m.cfg.noTaskKfuncs && v.taskKfuncs {
			continue
		}
		consts := map[string]any{
			"phantom_daemon_tgid": tgid,
			"phantom_fd_access":   v.fdAccess,
			"phantom_task_kfuncs": v.taskKfuncs,
		}
		obj, err := loadObjects(PathTracepoint, spec, tracepointAttachments, consts, m.cfg.ringBufferSize)
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			m.log.Debug("kernel rejects a tracepoint program variant, trying the next",
				slog.Uint64("fd_access", uint64(v.fdAccess)), slog.Bool("task_kfuncs", v.taskKfuncs), slog.Any("error", err))
			errs = append(errs, err)
			continue
		}
		if err != nil {
			return nil, err
		}
		if !v.taskKfuncs {
			m.status.Limits = append(m.status.Limits,
				"ptrace attach and process_vm_readv/writev are not detected: the kernel does not let tracepoint programs call bpf_task_from_vpid() or bpf_task_from_pid()")
		}
		m.log.Debug("tracepoint programs loaded", slog.Uint64("fd_access", uint64(v.fdAccess)), slog.Bool("task_kfuncs", v.taskKfuncs))
		return obj, nil
	}
	return nil, errors.Join(errs...)
}

func (m *Monitor) countLoadError(err error) {
	reason := reasonLoad
	if strings.HasPrefix(err.Error(), "attach ") {
		reason = reasonAttach
	}
	m.metrics.errors.WithLabelValues(reason).Inc()

	var verr *ebpf.VerifierError
	if errors.As(err, &verr) {
		m.log.Debug("eBPF verifier log, last lines", slog.String("log", fmt.Sprintf("%+20v", verr)))
	}
}

// auditCorePattern reads core_pattern and warns when core dumps of
// protected processes would leave the pod: to a program (the pattern starts
// with "|") or to a file on the node.
func (m *Monitor) auditCorePattern(file string) string {
	data, err := os.ReadFile(file)
	if err != nil {
		m.log.Warn("read core_pattern", slog.String("file", file), slog.Any("error", err))
		return ""
	}
	pattern := strings.TrimSpace(string(data))
	switch {
	case strings.HasPrefix(pattern, "|"):
		m.log.Warn("core dumps are piped to a program, which receives the memory, and so the secrets, of any protected process that crashes; set kernel.core_pattern to a path on a tmpfs, or limit core size in the pods",
			slog.String("core_pattern", pattern))
	case pattern != "":
		m.log.Info("core dumps are written to files; a protected process that crashes leaves its memory there unless its core size limit is 0",
			slog.String("core_pattern", pattern))
	}
	return pattern
}

// Status returns the active path, the reason the LSM path is not active,
// the attached programs and the count of events lost so far.
func (m *Monitor) Status() Status {
	s := m.status
	s.Programs = slices.Clone(m.status.Programs)
	s.Limits = slices.Clone(m.status.Limits)
	m.runMu.Lock()
	defer m.runMu.Unlock()
	if m.obj != nil && !m.closed {
		s.Lost = m.readLost()
	} else {
		s.Lost = m.lost
	}
	return s
}

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

// Close detaches and unloads the programs. Run returns once Close is
// called. Closing twice is harmless.
func (m *Monitor) Close() error {
	m.runMu.Lock()
	defer m.runMu.Unlock()

	if m.closed {
		return nil
	}
	m.closed = true
	var errs []error
	if m.reader != nil {
		errs = append(errs, m.reader.Close())
	}
	if m.obj != nil {
		m.lost = m.readLost()
		errs = append(errs, m.obj.close())
	}
	return errors.Join(errs...)
}

// readLost returns the kernel's count of dropped events. Callers hold
// m.runMu.
func (m *Monitor) readLost() uint64 {
	var lost uint64
	if err := m.obj.lost.Get(&lost); err != nil {
		return m.lost
	}
	return lost
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

var _ io.Closer = (*Monitor)(nil)
