package reconcile

import (
	"context"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"k8s.io/client-go/kubernetes/fake"
)

// TestLeaseElectorHandsOver runs two LeaseElectors on one fake API server
// with client-go's real leader election: one leads at a time, and when the
// leader stops it releases the Lease and the other takes over.
func TestLeaseElectorHandsOver(t *testing.T) {
	t.Parallel()
	client := fake.NewClientset()
	var leading atomic.Int32
	var overlap atomic.Bool
	leader := make(chan string, 4)

	start := func(identity string) (context.CancelFunc, *sync.WaitGroup) {
		elector := &LeaseElector{
			Client: client, Namespace: "phantom-system", LeaseName: "phantom-webhook",
			Identity: identity, Logger: slog.New(slog.DiscardHandler),
			LeaseDuration: 2 * time.Second, RenewDeadline: time.Second, RetryPeriod: 50 * time.Millisecond,
		}
		ctx, cancel := context.WithCancel(context.Background())
		var wg sync.WaitGroup
		wg.Go(func() {
			elector.Run(ctx, func(ctx context.Context) {
				if leading.Add(1) > 1 {
					overlap.Store(true)
				}
				leader <- identity
				<-ctx.Done()
				leading.Add(-1)
			})
		})
		return cancel, &wg
	}

	cancelA, wgA := start("webhook-0")
	first := receive(t, leader)
	cancelB, wgB := start("webhook-1")
	defer func() {
		cancelB()
		wgB.Wait()
	}()

	// Stop the first leader; the other takes over.
	if first == "webhook-0" {
		cancelA()
		wgA.Wait()
	} else {
		t.Fatalf("first leader = %s, want webhook-0, which started alone", first)
	}
	if second := receive(t, leader); second != "webhook-1" {
		t.Errorf("second leader = %s, want webhook-1", second)
	}
	if overlap.Load() {
		t.Error("two replicas led at the same time")
	}
}

func receive(t *testing.T, ch <-chan string) string {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(10 * time.Second):
		t.Fatal("timed out waiting for a leader")
		return ""
	}
}
