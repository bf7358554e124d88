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

	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
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

var _ io.Closer = (*Monitor)(nil)
