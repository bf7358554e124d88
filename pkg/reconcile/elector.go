package reconcile

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
)

// Default timings of LeaseElector, those of kube-controller-manager.
const (
	DefaultLeaseDuration = 15 * time.Second
	DefaultRenewDeadline = 10 * time.Second
	DefaultRetryPeriod   = 2 * time.Second
)

// LeaseElector is an Elector on a coordination.k8s.io Lease. It needs RBAC
// get, create and update on leases in Namespace.
type LeaseElector struct {
	Client    kubernetes.Interface
	Namespace string
	LeaseName string
	// Identity must differ between replicas; the pod name is.
	Identity string
	Logger   *slog.Logger

	// Zero durations take the defaults.
	LeaseDuration time.Duration
	RenewDeadline time.Duration
	RetryPeriod   time.Duration

	// leading is held while lead runs, so two terms never overlap.
	leading sync.Mutex
}

var _ Elector = (*LeaseElector)(nil)

// Run implements Elector. After losing the Lease it tries to acquire it
// again, until ctx ends. When ctx ends while leading, it releases the
// Lease so another replica takes over without waiting for it to expire.
func (e *LeaseElector) Run(ctx context.Context, lead func(ctx context.Context)) {
	defer func() {
		// Wait for the last term's lead to return.
		e.leading.Lock()
		defer e.leading.Unlock()
	}()
	for ctx.Err() == nil {
		if err := e.runOnce(ctx, lead); err != nil {
			e.Logger.Error("leader election failed", "lease", e.LeaseName, "error", err)
			select {
			case <-ctx.Done():
			case <-time.After(e.durations().retry):
			}
		}
	}
}

type electionDurations struct{ lease, renew, retry time.Duration }

func (e *LeaseElector) durations() electionDurations {
	d := electionDurations{DefaultLeaseDuration, DefaultRenewDeadline, DefaultRetryPeriod}
	if e.LeaseDuration > 0 {
		d.lease = e.LeaseDuration
	}
	if e.RenewDeadline > 0 {
		d.renew = e.RenewDeadline
	}
	if e.RetryPeriod > 0 {
		d.retry = e.RetryPeriod
	}
	return d
}

// runOnce takes part in one election and returns once this replica lost
// the Lease, or ctx ended.
func (e *LeaseElector) runOnce(ctx context.Context, lead func(ctx context.Context)) error {
	if e.Identity == "" {
		return errors.New("identity is empty")
	}
	lock := &resourcelock.LeaseLock{
		LeaseMeta:  metav1.ObjectMeta{Namespace: e.Namespace, Name: e.LeaseName},
		Client:     e.Client.CoordinationV1(),
		LockConfig: resourcelock.ResourceLockConfig{Identity: e.Identity},
	}

	d := e.durations()
	elector, err := leaderelection.NewLeaderElector(leaderelection.LeaderElectionConfig{
		Lock:            lock,
		LeaseDuration:   d.lease,
		RenewDeadline:   d.renew,
		RetryPeriod:     d.retry,
		ReleaseOnCancel: true,
		Name:            e.LeaseName,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(ctx context.Context) {
				// client-go calls this in a goroutine and cancels ctx when
				// the Lease is lost, possibly before an earlier term's
				// lead has returned.
				e.leading.Lock()
				defer e.leading.Unlock()
				lead(ctx)
			},
			OnStoppedLeading: func() { e.Logger.Debug("leader election round ended", "lease", e.LeaseName, "identity", e.Identity) },
			OnNewLeader: func(identity string) {
				e.Logger.Info("leader elected", "lease", e.LeaseName, "leader", identity)
			},
		},
	})
	if err != nil {
		return fmt.Errorf("configure leader election: %w", err)
	}

	elector.Run(ctx)
	return nil
}
