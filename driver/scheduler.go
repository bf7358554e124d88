package driver

import (
	"container/heap"
	"context"
	"sync"
	"time"
)

const (
	// housekeeping is the scheduler id of the cache sweep.
	housekeeping         = ""
	housekeepingInterval = 10 * time.Minute
	// maxSleep bounds the loop's sleep, so a jump of the wall clock (a
	// suspended VM) delays work by at most this much.
	maxSleep = 30 * time.Second
)

// scheduler is a heap of due times, one entry per volume, served by one
// goroutine. Scheduling a volume again replaces its entry; the superseded
// heap item is skipped when it comes up.
type scheduler struct {
	now  func() time.Time
	wake chan struct{}

	mu    sync.Mutex
	items dueHeap
	due   map[string]time.Time
}

type dueItem struct {
	at time.Time
	id string
}

type dueHeap []dueItem

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(dueItem)) }
func (h *dueHeap) Pop() any {
	old := *h
	item := old[len(old)-1]
	*h = old[:len(old)-1]
	return item
}

func newScheduler(now func() time.Time) *scheduler {
	s := &scheduler{now: now, wake: make(chan struct{}, 1), due: make(map[string]time.Time)}
	s.schedule(housekeeping, now().Add(housekeepingInterval))
	return s
}

// schedule sets when id is next due, replacing an earlier schedule.
func (s *scheduler) schedule(id string, at time.Time) {
	s.mu.Lock()
	s.due[id] = at
	heap.Push(&s.items, dueItem{at: at, id: id})
	s.mu.Unlock()

	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// cancel removes the schedule of id.
func (s *scheduler) cancel(id string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.due, id)
}

// popDue removes and returns the ids due at now, each once.
func (s *scheduler) popDue(now time.Time) []string {
	s.mu.Lock()
	defer s.mu.Unlock()

	var ids []string
	for s.items.Len() > 0 && !s.items[0].at.After(now) {
		item := heap.Pop(&s.items).(dueItem)
		if at, ok := s.due[item.id]; ok && at.Equal(item.at) {
			delete(s.due, item.id)
			ids = append(ids, item.id)
		}
	}
	// Drop superseded items, so the heap does not grow with republishes.
	if s.items.Len() > 4*len(s.due)+16 {
		s.compactLocked()
	}
	return ids
}

func (s *scheduler) compactLocked() {
	items := s.items[:0]
	for _, item := range s.items {
		if at, ok := s.due[item.id]; ok && at.Equal(item.at) {
			items = append(items, item)
		}
	}
	s.items = items
	heap.Init(&s.items)
}

// next returns the earliest due time.
func (s *scheduler) next() (time.Time, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.items.Len() == 0 {
		return time.Time{}, false
	}
	return s.items[0].at, true
}

// run calls work for each id when it comes due, one at a time, until ctx
// ends.
func (s *scheduler) run(ctx context.Context, work func(context.Context, string)) {
	timer := time.NewTimer(maxSleep)
	defer timer.Stop()
	for {
		sleep := maxSleep
		if at, ok := s.next(); ok {
			sleep = min(max(at.Sub(s.now()), 0), maxSleep)
		}
		timer.Reset(sleep)
		select {
		case <-ctx.Done():
			return
		case <-s.wake:
			// Since Go 1.23 a stopped timer delivers no stale value.
			timer.Stop()
			continue
		case <-timer.C:
		}
		s.runDue(ctx, work)
	}
}

// runDue calls work for the ids due now.
func (s *scheduler) runDue(ctx context.Context, work func(context.Context, string)) {
	for _, id := range s.popDue(s.now()) {
		if ctx.Err() != nil {
			return
		}
		work(ctx, id)
	}
}
