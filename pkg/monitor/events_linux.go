package monitor

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"

	"github.com/cilium/ebpf/ringbuf"
)

// pollInterval bounds how long Run waits for a record before it checks its
// context and the kernel's lost-event counter.
const pollInterval = 250 * time.Millisecond

// maxEventKeys bounds the Kubernetes Event rate limiter's memory.
const maxEventKeys = 4096

// Run reads events from the ring buffer and writes each to the audit log,
// the metrics and the EventRecorder, until ctx is done or Close is called.
// It returns nil then, and an error only when the ring buffer cannot be
// read. On a disabled Monitor it waits for ctx and returns nil. Run must
// not be called twice at once.
func (m *Monitor) Run(ctx context.Context) error {
	rd, err := m.openReader()
	if err != nil || rd == nil {
		if err == nil {
			<-ctx.Done()
		}
		return err
	}

	var (
		rec      ringbuf.Record
		lastLost uint64
	)
	for ctx.Err() == nil {
		rd.SetDeadline(time.Now().Add(pollInterval))
		err := rd.ReadInto(&rec)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			lastLost = m.checkLost(lastLost)
			continue
		case errors.Is(err, ringbuf.ErrClosed):
			return nil
		case err != nil:
			m.metrics.errors.WithLabelValues(reasonRingbufRead).Inc()
			m.log.Error("read runtime protection events", slog.Any("error", err))
			return fmt.Errorf("read runtime protection events: %w", err)
		}
		m.handleRecord(rec.RawSample)
		if rec.Remaining == 0 {
			lastLost = m.checkLost(lastLost)
		}
	}
	return nil
}

// openReader creates the ring buffer reader that Close closes. It returns
// a nil reader for a disabled Monitor.
func (m *Monitor) openReader() (*ringbuf.Reader, error) {
	m.runMu.Lock()
	defer m.runMu.Unlock()

	if m.obj == nil {
		return nil, nil
	}
	if m.closed {
		return nil, errors.New("read runtime protection events: monitor is closed")
	}
	if m.reader != nil {
		return nil, errors.New("read runtime protection events: Run is already running")
	}
	rd, err := ringbuf.NewReader(m.obj.events)
	if err != nil {
		m.metrics.errors.WithLabelValues(reasonRingbufRead).Inc()
		return nil, fmt.Errorf("open runtime protection ring buffer: %w", err)
	}
	m.reader = rd
	return rd, nil
}

// checkLost counts and logs events the kernel dropped since the last call.
func (m *Monitor) checkLost(last uint64) uint64 {
	m.runMu.Lock()
	if m.closed {
		m.runMu.Unlock()
		return last
	}
	lost := m.readLost()
	m.runMu.Unlock()

	if lost > last {
		m.metrics.errors.WithLabelValues(reasonRingbufFull).Add(float64(lost - last))
		m.log.Warn("runtime protection events lost: the ring buffer was full",
			slog.Uint64("lost", lost-last), slog.Uint64("lost_total", lost))
	}
	return lost
}

func (m *Monitor) handleRecord(raw []byte) {
	var rec lsmPhantomEvent
	if err := binary.Read(bytes.NewReader(raw), binary.NativeEndian, &rec); err != nil {
		m.metrics.errors.WithLabelValues(reasonDecode).Inc()
		m.log.Error("decode runtime protection event", slog.Int("size", len(raw)), slog.Any("error", err))
		return
	}
	e := m.newEvent(&rec)

	m.metrics.events.WithLabelValues(e.Kind, e.Action).Inc()
	m.audit.LogAttrs(context.Background(), slog.LevelWarn, "runtime protection event", e.attrs()...)
	if m.cfg.Events != nil && e.Pod.UID != "" && m.eventDue(e) {
		m.cfg.Events.PodEvent(e.Pod, e.Reason(), e.Message())
	}
}

// newEvent resolves a kernel record into an Event.
func (m *Monitor) newEvent(rec *lsmPhantomEvent) Event {
	e := Event{
		Time:      time.Now(),
		Node:      m.cfg.NodeName,
		Path:      m.status.Path,
		Kind:      kindNames[rec.Kind],
		Action:    actionNames[rec.Action],
		PodCgroup: rec.PodCgroup,
		Actor: Process{
			PID:      rec.ActorPid,
			TID:      rec.ActorTid,
			Comm:     cString(rec.ActorComm[:]),
			CgroupID: rec.ActorCgroup,
			Cgroup:   cString(rec.ActorCgroupName[:]),
		},
		Target: Target{
			PID:      rec.TargetPid,
			Comm:     cString(rec.TargetComm[:]),
			CgroupID: rec.TargetCgroup,
			Cgroup:   cString(rec.TargetCgroupName[:]),
			Inode:    rec.TargetIno,
			File:     cString(rec.FileName[:]),
			Detail:   rec.Detail,
		},
	}
	if e.Kind == "" {
		e.Kind = fmt.Sprintf("unknown_%d", rec.Kind)
	}
	if e.Action == "" {
		e.Action = ActionAudit
	}
	if rec.TargetDev != 0 {
		e.Target.Device = userDev(rec.TargetDev)
	}
	if e.Target.CgroupID != 0 && e.Target.CgroupID != e.PodCgroup {
		e.Container = containerID(e.Target.Cgroup)
	}
	e.Actor.Container = containerID(e.Actor.Cgroup)

	m.mu.Lock()
	if uid, ok := m.byCgroup[rec.PodCgroup]; ok {
		e.Pod = m.pods[uid].ref()
	}
	m.mu.Unlock()
	return e
}

// eventDue reports whether a Kubernetes Event for e may be sent now, at
// most one per pod, kind, action and actor each EventInterval.
func (m *Monitor) eventDue(e Event) bool {
	key := eventKey{podUID: e.Pod.UID, kind: e.Kind, action: e.Action, actor: e.Actor.PID}

	m.eventMu.Lock()
	defer m.eventMu.Unlock()

	if last, ok := m.lastEvent[key]; ok && e.Time.Sub(last) < m.cfg.EventInterval {
		return false
	}
	if len(m.lastEvent) >= maxEventKeys {
		for k, t := range m.lastEvent {
			if e.Time.Sub(t) >= m.cfg.EventInterval {
				delete(m.lastEvent, k)
			}
		}
	}
	if len(m.lastEvent) < maxEventKeys {
		m.lastEvent[key] = e.Time
	}
	return true
}
