package circuit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// fakeClock is a clock whose Sleep advances time at once, so a prober runs
// through minutes of its schedule in microseconds.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
	return nil
}

var errDown = errors.New("HTTP 503: Vault is sealed")

// probeRecorder records probe times and keeps demand alive, like a caller
// that keeps trying.
type probeRecorder struct {
	mu     sync.Mutex
	times  []time.Time
	result func(n int) error
	b      *Breaker
	clock  *fakeClock
	done   chan struct{}
	until  time.Time
}

func (p *probeRecorder) probe(context.Context) error {
	p.mu.Lock()
	p.times = append(p.times, p.clock.Now())
	n := len(p.times)
	p.mu.Unlock()
	if p.clock.Now().Before(p.until) {
		_ = p.b.Allow() // a caller still needs the service
	}
	return p.result(n)
}

func newTestBreaker(t *testing.T, result func(n int) error, demandFor time.Duration) (*Breaker, *probeRecorder, *fakeClock, *bytes.Buffer, *prometheus.Registry) {
	t.Helper()
	clock := &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
	rec := &probeRecorder{result: result, clock: clock, until: clock.now.Add(demandFor)}
	var logs bytes.Buffer
	reg := prometheus.NewRegistry()
	b := New(Config{
		Name: "OpenBao", Probe: rec.probe, Now: clock.Now, Sleep: clock.Sleep,
		Rand:   func() float64 { return 0.999 }, // the shortest delays: the worst case for the call rate
		Logger: slog.New(slog.NewTextHandler(&logs, nil)), Registerer: reg,
	})
	rec.b = b
	t.Cleanup(b.Close)
	return b, rec, clock, &logs, reg
}

// waitIdle waits until the prober goroutine has exited.
func waitIdle(t *testing.T, b *Breaker) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		b.mu.Lock()
		probing := b.probing
		b.mu.Unlock()
		if !probing {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatal("prober still running after 5s")
}

func TestBreakerOpensAfterThreshold(t *testing.T) {
	b, _, _, logs, reg := newTestBreaker(t, func(int) error { return errDown }, 0)

	for i := range DefaultThreshold - 1 {
		b.Record(true, errDown)
		if err := b.Allow(); err != nil {
			t.Fatalf("Allow() after %d failures = %v, want nil", i+1, err)
		}
	}
	b.Record(true, errDown)
	err := b.Allow()
	if !errors.Is(err, ErrOpen) {
		t.Fatalf("Allow() after %d failures = %v, want ErrOpen", DefaultThreshold, err)
	}
	for _, want := range []string{"OpenBao unavailable since 2026-01-01T00:00:00Z", "Vault is sealed"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Allow() error %q does not contain %q", err, want)
		}
	}

	// More failures while open are neither logged nor counted again.
	b.Record(true, errDown)
	b.Record(true, errDown)
	waitIdle(t, b)
	if n := strings.Count(logs.String(), "circuit breaker opened"); n != 1 {
		t.Errorf("log lines for opening = %d, want 1:\n%s", n, logs)
	}
	if got := testutil.ToFloat64(b.metrics.transitions.WithLabelValues("open")); got < 1 {
		t.Errorf("transitions{to=open} = %v, want at least 1", got)
	}
	if n := testutil.CollectAndCount(reg, "phantom_circuit_state"); n != 1 {
		t.Errorf("phantom_circuit_state series = %d, want 1", n)
	}
}

func TestBreakerSuccessResetsCount(t *testing.T) {
	b, _, _, _, _ := newTestBreaker(t, func(int) error { return nil }, 0)

	b.Record(true, errDown)
	b.Record(true, errDown)
	b.Record(false, nil)
	b.Record(true, errDown)
	if err := b.Allow(); err != nil {
		t.Errorf("Allow() = %v, want nil: a success between failures resets the count", err)
	}
}

// TestBreakerProbeRate runs ten minutes of a sealed OpenBao with a caller
// that keeps asking, and counts probes (failed OpenBao calls) per minute.
func TestBreakerProbeRate(t *testing.T) {
	b, rec, clock, _, _ := newTestBreaker(t, func(int) error { return errDown }, 10*time.Minute)
	start := clock.Now()
	for range DefaultThreshold {
		b.Record(true, errDown)
	}
	waitIdle(t, b)

	perMinute := make(map[int]int)
	for _, at := range rec.times {
		perMinute[int(at.Sub(start)/time.Minute)]++
	}
	// In the first minute the threshold failures that opened the breaker
	// come on top of these probes.
	const limit = 5
	for minute := range 10 {
		if perMinute[minute] > limit {
			t.Errorf("minute %d: %d probes, want at most %d", minute, perMinute[minute], limit)
		}
		if perMinute[minute] == 0 {
			t.Errorf("minute %d: no probe while a caller waits", minute)
		}
	}
	// No probing after the demand stopped, past IdleAfter.
	last := rec.times[len(rec.times)-1]
	if last.Sub(start) > 10*time.Minute+DefaultIdleAfter+DefaultMaxProbeInterval {
		t.Errorf("last probe at %v, want probing to stop within IdleAfter of the last demand", last.Sub(start))
	}
}

func TestBreakerUnreachableProbesFast(t *testing.T) {
	unreachable := fmt.Errorf("dial 127.0.0.1:8200: %w: connection refused", ErrUnreachable)
	b, rec, clock, _, _ := newTestBreaker(t, func(n int) error {
		if n < 20 {
			return unreachable
		}
		return nil
	}, time.Hour)
	start := clock.Now()
	for range DefaultThreshold {
		b.Record(true, errDown)
	}
	waitIdle(t, b)

	if got := len(rec.times); got != 20 {
		t.Fatalf("probes = %d, want 20 (the 20th succeeds)", got)
	}
	for i := 1; i < len(rec.times); i++ {
		if gap := rec.times[i].Sub(rec.times[i-1]); gap > DefaultProbeInterval {
			t.Errorf("gap between unreachable probes %d and %d = %v, want at most %v", i-1, i, gap, DefaultProbeInterval)
		}
	}
	if b.State() != Closed {
		t.Errorf("state = %v after a successful probe, want closed", b.State())
	}
	if elapsed := clock.Now().Sub(start); elapsed > DefaultFirstBackoff+20*DefaultProbeInterval {
		t.Errorf("closed after %v, want within %v", elapsed, DefaultFirstBackoff+20*DefaultProbeInterval)
	}
}

func TestBreakerWait(t *testing.T) {
	b, _, _, _, _ := newTestBreaker(t, func(n int) error {
		if n < 3 {
			return errDown
		}
		return nil
	}, time.Hour)
	if err := b.Wait(context.Background()); err != nil {
		t.Fatalf("Wait() on a closed breaker = %v", err)
	}
	for range DefaultThreshold {
		b.Record(true, errDown)
	}

	if err := b.Wait(context.Background()); err != nil {
		t.Fatalf("Wait() = %v, want nil once a probe succeeds", err)
	}
	if b.State() != Closed || !b.OpenSince().IsZero() {
		t.Errorf("after Wait: state %v, open since %v; want closed", b.State(), b.OpenSince())
	}

	var seen []string
	for _, to := range []string{"open", "half_open", "closed"} {
		if testutil.ToFloat64(b.metrics.transitions.WithLabelValues(to)) > 0 {
			seen = append(seen, to)
		}
	}
	if diff := cmp.Diff([]string{"open", "half_open", "closed"}, seen); diff != "" {
		t.Errorf("transitions (-want +got):\n%s", diff)
	}
}

func TestBreakerWaitHonoursContext(t *testing.T) {
	b := New(Config{Name: "OpenBao", Probe: func(context.Context) error { return errDown }})
	t.Cleanup(b.Close)
	for range DefaultThreshold {
		b.Record(true, errDown)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()

	if err := b.Wait(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait() = %v, want DeadlineExceeded", err)
	}
}

func TestStateString(t *testing.T) {
	t.Parallel()
	got := []string{Closed.String(), HalfOpen.String(), Open.String()}
	if diff := cmp.Diff([]string{"closed", "half_open", "open"}, got); diff != "" {
		t.Errorf("State names (-want +got):\n%s", diff)
	}
}
