// Package circuit is the circuit breaker Phantom puts in front of OpenBao.
//
// The breaker is closed while OpenBao serves requests. A number of consecutive
// failures opens it: requests then fail at once without reaching OpenBao,
// and a probe checks OpenBao on a jittered, growing schedule. While a probe
// runs the breaker is half-open. A successful probe, or a successful
// request, closes it. Each transition is logged once and exported as the
// gauge phantom_circuit_state and the counter
// phantom_circuit_transitions_total.
//
// Probes run only while someone needs OpenBao: the prober goroutine starts
// when the breaker opens and stops once it closes or after IdleAfter
// without a caller. A probe that did not reach OpenBao at all (the
// connection was refused or timed out) cost OpenBao nothing, so it is
// repeated after the minimum interval. A probe that reached OpenBao and
// failed doubles the interval, up to the maximum.
//
// All methods are safe for concurrent use.
package circuit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// State is the state of a Breaker. Its value is the phantom_circuit_state
// gauge.
type State int

// Breaker states.
const (
	Closed   State = 0
	HalfOpen State = 1
	Open     State = 2
)

// Defaults of Config.
const (
	DefaultThreshold        = 3
	DefaultProbeInterval    = time.Second
	DefaultMaxProbeInterval = 15 * time.Second
	DefaultFirstBackoff     = 5 * time.Second
	DefaultIdleAfter        = 2 * time.Minute
	// jitter is the fraction by which a probe delay is shortened at random,
	// so nodes that lost OpenBao together do not probe together.
	jitter = 0.2
)

var (
	// ErrOpen means the breaker is open: the request was not sent.
	ErrOpen = errors.New("circuit breaker open")
	// ErrUnreachable marks a probe failure that never reached the service,
	// such as a refused connection. The breaker probes again after the
	// minimum interval instead of backing off.
	ErrUnreachable = errors.New("service unreachable")
)

// Config configures a Breaker.
type Config struct {
	// Name names the protected service in log lines, such as "OpenBao".
	Name string
	// Threshold is the number of consecutive failures that open the
	// breaker. Zero means DefaultThreshold.
	Threshold int
	// Probe checks whether the service is back. It must be cheap and must
	// not need credentials. Nil leaves recovery to Success calls.
	Probe func(ctx context.Context) error
	// ProbeInterval is the delay before a probe after one that failed with
	// ErrUnreachable. Zero means DefaultProbeInterval.
	ProbeInterval time.Duration
	// FirstBackoff is the delay before the first probe after the breaker
	// opened. Each probe that reached the service and failed doubles the
	// delay, up to MaxProbeInterval. Zero means DefaultFirstBackoff.
	FirstBackoff time.Duration
	// MaxProbeInterval caps the backoff. Zero means DefaultMaxProbeInterval.
	MaxProbeInterval time.Duration
	// ProbeTimeout bounds one probe. Zero means MaxProbeInterval.
	ProbeTimeout time.Duration
	// IdleAfter stops probing when no caller asked for the service for this
	// long. Zero means DefaultIdleAfter.
	IdleAfter time.Duration

	Logger     *slog.Logger
	Registerer prometheus.Registerer
	// Now and Sleep are the clock; nil means the real one. Sleep returns
	// ctx.Err() when ctx ends first.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
	// Rand returns a number in [0, 1) for jitter; nil uses math/rand/v2.
	Rand func() float64
}

// Breaker is a circuit breaker. Create it with New.
type Breaker struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics

	mu         sync.Mutex
	state      State
	failures   int
	openedAt   time.Time
	lastErr    string
	lastDemand time.Time
	probing    bool
	closedCh   chan struct{} // closed and replaced when the breaker closes
	stop       context.CancelFunc
}

// New returns a closed Breaker.
func New(cfg Config) *Breaker {
	if cfg.Name == "" {
		cfg.Name = "service"
	}
	if cfg.Threshold <= 0 {
		cfg.Threshold = DefaultThreshold
	}
	if cfg.ProbeInterval <= 0 {
		cfg.ProbeInterval = DefaultProbeInterval
	}
	if cfg.FirstBackoff <= 0 {
		cfg.FirstBackoff = DefaultFirstBackoff
	}
	if cfg.MaxProbeInterval <= 0 {
		cfg.MaxProbeInterval = DefaultMaxProbeInterval
	}
	if cfg.ProbeTimeout <= 0 {
		cfg.ProbeTimeout = cfg.MaxProbeInterval
	}
	if cfg.IdleAfter <= 0 {
		cfg.IdleAfter = DefaultIdleAfter
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Sleep == nil {
		cfg.Sleep = sleep
	}
	if cfg.Rand == nil {
		cfg.Rand = rand.Float64
	}
	b := &Breaker{cfg: cfg, log: cfg.Logger, metrics: newMetrics(cfg.Registerer), closedCh: make(chan struct{})}
	b.metrics.state.Set(float64(Closed))
	return b
}

// Allow returns nil when a request may be sent. Otherwise it returns an
// error wrapping ErrOpen that names since when and why. A refused caller
// counts as demand, which keeps the prober running.
func (b *Breaker) Allow() error {
	b.mu.Lock()
	defer b.mu.Unlock()

	if b.state == Closed {
		return nil
	}
	b.lastDemand = b.cfg.Now()
	b.startProbingLocked()
	return b.openErrorLocked()
}

// Record feeds the outcome of a request: failed is true when the service
// failed to serve it (unreachable, sealed, 5xx), and false when it
// responded, whatever the response. Errors that belong to the caller (a cancelled
// context, a permission denied) are successes here.
func (b *Breaker) Record(failed bool, err error) {
	if !failed {
		b.Success()
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()

	b.failures++
	if err != nil {
		b.lastErr = err.Error()
	}
	if b.state == Closed && b.failures >= b.cfg.Threshold {
		b.openedAt = b.cfg.Now()
		b.lastDemand = b.openedAt
		b.transitionLocked(Open)
		b.startProbingLocked()
	}
}

// Success closes the breaker, because the service responded.
func (b *Breaker) Success() {
	b.mu.Lock()
	defer b.mu.Unlock()

	b.failures = 0
	if b.state != Closed {
		b.closeLocked()
	}
}

// Wait blocks until the breaker is closed or ctx ends, and returns
// ctx.Err() in the second case. Waiting counts as demand.
func (b *Breaker) Wait(ctx context.Context) error {
	for {
		b.mu.Lock()
		if b.state == Closed {
			b.mu.Unlock()
			return nil
		}
		b.lastDemand = b.cfg.Now()
		b.startProbingLocked()
		closed := b.closedCh
		b.mu.Unlock()

		select {
		case <-closed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// State returns the current state.
func (b *Breaker) State() State {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.state
}

// OpenSince returns when the breaker last opened, or the zero time while
// it is closed.
func (b *Breaker) OpenSince() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.state == Closed {
		return time.Time{}
	}
	return b.openedAt
}

// Close stops the prober. The breaker stays usable; a later failure starts
// a new prober.
func (b *Breaker) Close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.stop != nil {
		b.stop()
	}
}

func (b *Breaker) openErrorLocked() error {
	return fmt.Errorf("%w: %s unavailable since %s after %d failed requests (last error: %s)",
		ErrOpen, b.cfg.Name, b.openedAt.UTC().Format(time.RFC3339), b.failures, b.lastErr)
}

func (b *Breaker) closeLocked() {
	b.transitionLocked(Closed)
	close(b.closedCh)
	b.closedCh = make(chan struct{})
	if b.stop != nil {
		b.stop()
		b.stop = nil
	}
}

func (b *Breaker) transitionLocked(to State) {
	if b.state == to {
		return
	}
	from := b.state
	b.state = to
	b.metrics.state.Set(float64(to))
	b.metrics.transitions.WithLabelValues(to.String()).Inc()

	switch {
	case to == Open && from == Closed:
		b.log.Warn("circuit breaker opened: requests fail fast until a probe succeeds",
			"service", b.cfg.Name, "failures", b.failures, "last_error", b.lastErr)
	case to == Closed:
		b.log.Info("circuit breaker closed: service is back",
			"service", b.cfg.Name, "open_for", b.cfg.Now().Sub(b.openedAt).Round(time.Millisecond))
	default:
		b.log.Debug("circuit breaker state", "service", b.cfg.Name, "from", from.String(), "to", to.String())
	}
}

// startProbingLocked starts the prober unless it runs or there is no probe.
func (b *Breaker) startProbingLocked() {
	if b.probing || b.cfg.Probe == nil || b.state == Closed {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	b.probing = true
	b.stop = cancel
	go b.probeLoop(ctx)
}

// probeLoop probes on the backoff schedule until the breaker closes, it is
// stopped, or no caller has needed the service for IdleAfter.
func (b *Breaker) probeLoop(ctx context.Context) {
	defer func() {
		b.mu.Lock()
		b.probing = false
		b.mu.Unlock()
	}()

	backoff := b.cfg.FirstBackoff
	delay := backoff
	for {
		if err := b.cfg.Sleep(ctx, b.jittered(delay)); err != nil {
			return
		}
		if b.idle() {
			b.log.Debug("circuit breaker stops probing: no caller needs the service", "service", b.cfg.Name)
			return
		}

		err := b.probe(ctx)
		switch {
		case err == nil:
			return
		case ctx.Err() != nil:
			return
		case errors.Is(err, ErrUnreachable):
			delay = b.cfg.ProbeInterval
		default:
			backoff = min(backoff*2, b.cfg.MaxProbeInterval)
			delay = backoff
		}
	}
}

// probe runs one probe in the half-open state and applies its result.
func (b *Breaker) probe(ctx context.Context) error {
	b.mu.Lock()
	if b.state == Closed {
		b.mu.Unlock()
		return nil
	}
	b.transitionLocked(HalfOpen)
	b.mu.Unlock()

	probeCtx, cancel := context.WithTimeout(ctx, b.cfg.ProbeTimeout)
	err := b.cfg.Probe(probeCtx)
	cancel()
	b.metrics.probes.WithLabelValues(probeResult(err)).Inc()

	b.mu.Lock()
	defer b.mu.Unlock()
	if err == nil {
		b.failures = 0
		b.closeLocked()
		return nil
	}
	b.lastErr = err.Error()
	if b.state == HalfOpen {
		b.transitionLocked(Open)
	}
	return err
}

func (b *Breaker) idle() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.cfg.Now().Sub(b.lastDemand) > b.cfg.IdleAfter
}

// jittered shortens d by up to the jitter fraction.
func (b *Breaker) jittered(d time.Duration) time.Duration {
	return time.Duration(float64(d) * (1 - jitter*b.cfg.Rand()))
}

func probeResult(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrUnreachable):
		return "unreachable"
	default:
		return "failed"
	}
}

// String returns the state's name, the `to` label of the transitions
// counter.
func (s State) String() string {
	switch s {
	case Closed:
		return "closed"
	case HalfOpen:
		return "half_open"
	case Open:
		return "open"
	default:
		return fmt.Sprintf("state(%d)", int(s))
	}
}

func sleep(ctx context.Context, d time.Duration) error {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
