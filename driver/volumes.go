package driver

import (
	"sync"
	"time"

	"github.com/phantom-sec/phantom/pkg/bao"
	"github.com/phantom-sec/phantom/pkg/fetch"
	"github.com/phantom-sec/phantom/pkg/satoken"
)

// volume is what the driver remembers of a published volume. It holds no
// secret value.
type volume struct {
	id        string
	target    string
	pod       satoken.Pod
	identity  bao.Identity
	readOnly  bool
	leases    []fetch.Lease
	published time.Time
}

// volumes is the table of published volumes, with one lock per volume id
// so that calls for one volume run one at a time and calls for different
// volumes run in parallel.
type volumes struct {
	mu    sync.Mutex
	byID  map[string]*volume
	locks map[string]*volumeLock
}

type volumeLock struct {
	sync.Mutex
	waiters int
}

func newVolumes() *volumes {
	return &volumes{byID: make(map[string]*volume), locks: make(map[string]*volumeLock)}
}

// lock serializes calls for id and returns the unlock function.
func (v *volumes) lock(id string) func() {
	v.mu.Lock()
	l, ok := v.locks[id]
	if !ok {
		l = &volumeLock{}
		v.locks[id] = l
	}
	l.waiters++
	v.mu.Unlock()

	l.Lock()
	return func() {
		l.Unlock()
		v.mu.Lock()
		l.waiters--
		if l.waiters == 0 {
			delete(v.locks, id)
		}
		v.mu.Unlock()
	}
}

func (v *volumes) get(id string) (*volume, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()

	vol, ok := v.byID[id]
	return vol, ok
}

func (v *volumes) put(vol *volume) (count int) {
	v.mu.Lock()
	defer v.mu.Unlock()

	v.byID[vol.id] = vol
	return len(v.byID)
}

func (v *volumes) delete(id string) (count int) {
	v.mu.Lock()
	defer v.mu.Unlock()

	delete(v.byID, id)
	return len(v.byID)
}
