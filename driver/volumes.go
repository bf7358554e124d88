package driver

import (
	"sync"
	"sync/atomic"
	"time"

	"github.com/phantom-sec/phantom/pkg/bao"
	"github.com/phantom-sec/phantom/pkg/satoken"
	"github.com/phantom-sec/phantom/pkg/spec"
	"github.com/phantom-sec/phantom/pkg/state"
)

// volume is the driver's record of a published volume. Only the held
// leases carry secret values, in memory.
type volume struct {
	id       string
	target   string
	pod      satoken.Pod
	saUID    string
	identity bao.Identity
	spec     *spec.Spec
	// attrs are the volume attributes without kubelet's tokens, for the
	// index.
	attrs    map[string]string
	specHash string
	readOnly bool
	gid      *int64
	maxBytes int64

	// leases are the volume's leases; change them with setLeases, which
	// keeps leaseCount readable without the volume's lock.
	leases      []*heldLease
	leaseCount  atomic.Int32
	refreshedAt time.Time
	refresh     time.Duration
	// degraded means some content came from a cached copy past its expiry
	// or from another volume's lease: it is replaced at the next chance.
	degraded bool
	// mounted is false for a volume recovered from the index whose target
	// is not mounted; the next publish mounts it.
	mounted bool
	// protected means the runtime-protection monitor watches the volume;
	// protectWarned limits the log line of a failed attempt to one.
	protected     bool
	protectWarned bool
	// retryAt delays background work after a failure.
	retryAt time.Time
}

// heldLease is a lease the volume owns, with the secret it issued.
type heldLease struct {
	state.Lease
	// secret is nil after a restart when the sealed cache lost the copy.
	secret *bao.Secret
	// lost is set when OpenBao rejected a renewal: the lease is gone.
	lost bool
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

// leaseCount returns how many leases the volumes hold.
func (v *volumes) leaseCount() int {
	v.mu.Lock()
	defer v.mu.Unlock()

	n := 0
	for _, vol := range v.byID {
		n += int(vol.leaseCount.Load())
	}
	return n
}

// setLeases replaces the volume's leases. The caller holds the volume's lock.
func (vol *volume) setLeases(leases []*heldLease) {
	vol.leases = leases
	vol.leaseCount.Store(int32(len(leases)))
}

// record returns the index record of vol.
func (vol *volume) record() *state.Record {
	r := &state.Record{
		VolumeID: vol.id, Target: vol.target,
		Namespace: vol.pod.Namespace, PodName: vol.pod.Name, PodUID: vol.pod.UID, ServiceAccount: vol.pod.ServiceAccount,
		Role: vol.identity.Role, Attributes: vol.attrs, SpecHash: vol.specHash,
		ReadOnly: vol.readOnly, GID: vol.gid, MaxBytes: vol.maxBytes, RefreshedAt: vol.refreshedAt,
	}
	for _, l := range vol.leases {
		r.Leases = append(r.Leases, l.Lease)
	}
	return r
}

// leaseKeys returns the dynamic keys of the volume's leases.
func (vol *volume) heldByKey() map[string]*heldLease {
	held := make(map[string]*heldLease, len(vol.leases))
	for _, l := range vol.leases {
		held[l.Key] = l
	}
	return held
}
