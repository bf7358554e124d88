package reconcile

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"log/slog"
	"math/big"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"
	clocktesting "k8s.io/utils/clock/testing"
	"k8s.io/utils/ptr"

	"github.com/phantom-sec/phantom/pkg/webhook"
)

// restoreTimeout is the promise of the reconciler: a deleted or altered
// object is back within 5 seconds.
const restoreTimeout = 5 * time.Second

var replicaLabels = map[string]string{"app.kubernetes.io/name": "phantom-webhook"}

// fakeElector grants and revokes leadership on the test's call.
type fakeElector struct {
	grants chan struct{}

	mu     sync.Mutex
	cancel context.CancelFunc
}

func newFakeElector() *fakeElector { return &fakeElector{grants: make(chan struct{}, 1)} }

func (f *fakeElector) Run(ctx context.Context, lead func(ctx context.Context)) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-f.grants:
		}
		leadCtx, cancel := context.WithCancel(ctx)
		f.mu.Lock()
		f.cancel = cancel
		f.mu.Unlock()
		lead(leadCtx)
		cancel()
	}
}

func (f *fakeElector) grant() { f.grants <- struct{}{} }

func (f *fakeElector) revoke() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cancel != nil {
		f.cancel()
	}
}

// cluster is one fake API server that several reconcilers share. Each uses
// its own clientset, so the test can count the writes of each.
type cluster struct {
	tracker k8stesting.ObjectTracker
	admin   *fake.Clientset
}

func newCluster(t *testing.T) *cluster {
	t.Helper()
	admin := fake.NewClientset()
	return &cluster{tracker: admin.Tracker(), admin: admin}
}

// clientset returns a new clientset on the cluster's object tracker.
func (c *cluster) clientset() *fake.Clientset {
	cs := &fake.Clientset{}
	cs.AddReactor("*", "*", k8stesting.ObjectReaction(c.tracker))
	cs.AddWatchReactor("*", func(action k8stesting.Action) (bool, watch.Interface, error) {
		var opts metav1.ListOptions
		if w, ok := action.(k8stesting.WatchActionImpl); ok {
			opts = w.ListOptions
		}
		w, err := c.tracker.Watch(action.GetResource(), action.GetNamespace(), opts)
		return err == nil, w, err
	})
	return cs
}

// replica is one reconciler with its fakes.
type replica struct {
	client   *fake.Clientset
	elector  *fakeElector
	recorder *record.FakeRecorder
	rec      *Reconciler
	clock    *clocktesting.FakeClock
}

func (c *cluster) startReplica(t *testing.T, podName string, clock *clocktesting.FakeClock) *replica {
	t.Helper()
	r := &replica{
		client:   c.clientset(),
		elector:  newFakeElector(),
		recorder: record.NewFakeRecorder(100),
		clock:    clock,
	}
	rec, err := New(Config{
		Objects:         testObjects,
		Client:          r.client,
		ReplicaSelector: labels.SelectorFromSet(replicaLabels),
		PodName:         podName,
		Elector:         r.elector,
		Recorder:        r.recorder,
		Registerer:      prometheus.NewRegistry(),
		Logger:          slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Clock:           clock,
		ResyncPeriod:    time.Hour,
		CARetention:     10 * time.Minute,
	})
	if err != nil {
		t.Fatal(err)
	}
	r.rec = rec

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- rec.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	// The fake API server does not replay events that happen between an
	// informer's list and its watch, so wait for all three watches.
	waitFor(t, "the informers watch", func() bool {
		return rec.HasSynced() && countActions(r.client, "watch", "") >= 3
	})
	return r
}

// countActions counts the actions with verb on resource ("" for any).
func countActions(cs *fake.Clientset, verb, resource string) int {
	n := 0
	for _, a := range cs.Actions() {
		if a.GetVerb() == verb && (resource == "" || a.GetResource().Resource == resource) {
			n++
		}
	}
	return n
}

func countWrites(cs *fake.Clientset) int {
	return countActions(cs, "create", "") + countActions(cs, "update", "") + countActions(cs, "delete", "") + countActions(cs, "patch", "")
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitForWithin(t, 10*time.Second, what, cond)
}

func waitForWithin(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting until %s", timeout, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (c *cluster) webhookConfig(t *testing.T) *admissionregistrationv1.MutatingWebhookConfiguration {
	t.Helper()
	obj, err := c.admin.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(context.Background(), testObjects.WebhookConfigName, metav1.GetOptions{})
	if err != nil {
		return nil
	}
	return obj
}

func (c *cluster) csiDriver(t *testing.T) *storagev1.CSIDriver {
	t.Helper()
	obj, err := c.admin.StorageV1().CSIDrivers().Get(context.Background(), testObjects.DriverName, metav1.GetOptions{})
	if err != nil {
		return nil
	}
	return obj
}

// webhooksAsDesired reports whether the live configuration has the desired
// webhooks with caBundle bundle.
func webhooksAsDesired(live *admissionregistrationv1.MutatingWebhookConfiguration, bundle []byte) bool {
	if live == nil {
		return false
	}
	desired := DesiredWebhookConfiguration(testObjects)
	return len(webhookChanges(desired.Webhooks, live.Webhooks)) == 0 && len(caBundleChanges(live.Webhooks, bundle)) == 0
}

func driverAsDesired(live *storagev1.CSIDriver) bool {
	if live == nil {
		return false
	}
	changes, _ := csiDriverChanges(DesiredCSIDriver(testObjects).Spec, live.Spec)
	return len(changes) == 0
}

// events drains the recorded events.
func (r *replica) events() []string {
	var out []string
	for {
		select {
		case e := <-r.recorder.Events:
			out = append(out, e)
		default:
			return out
		}
	}
}

func (r *replica) restores(object string) float64 {
	return testutil.ToFloat64(r.rec.restores.WithLabelValues(object))
}

func TestReconcilerCreatesMissingObjects(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	r := c.startReplica(t, "webhook-0", clocktesting.NewFakeClock(time.Now()))

	r.elector.grant()
	waitFor(t, "both objects exist", func() bool {
		return webhooksAsDesired(c.webhookConfig(t), nil) && driverAsDesired(c.csiDriver(t))
	})

	if got := c.webhookConfig(t).Labels["app.kubernetes.io/part-of"]; got != "phantom" {
		t.Errorf("part-of label = %q, want phantom", got)
	}
	for _, object := range []string{ObjectWebhookConfiguration, ObjectCSIDriver} {
		if got := r.restores(object); got != 0 {
			t.Errorf("restores{object=%s} = %v after a first install, want 0", object, got)
		}
	}
	waitFor(t, "two Created events", func() bool { return len(r.recorder.Events) == 2 })
	for _, e := range r.events() {
		if !strings.HasPrefix(e, "Normal Created") {
			t.Errorf("event %q, want a Normal Created event", e)
		}
	}
}

func TestReconcilerRestoresDeletedObjects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		object string
		delete func(c *cluster) error
		exists func(t *testing.T, c *cluster) bool
	}{
		{
			object: ObjectWebhookConfiguration,
			delete: func(c *cluster) error {
				return c.admin.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), testObjects.WebhookConfigName, metav1.DeleteOptions{})
			},
			exists: func(t *testing.T, c *cluster) bool { return webhooksAsDesired(c.webhookConfig(t), nil) },
		},
		{
			object: ObjectCSIDriver,
			delete: func(c *cluster) error {
				return c.admin.StorageV1().CSIDrivers().Delete(context.Background(), testObjects.DriverName, metav1.DeleteOptions{})
			},
			exists: func(t *testing.T, c *cluster) bool { return driverAsDesired(c.csiDriver(t)) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.object, func(t *testing.T) {
			t.Parallel()
			c := newCluster(t)
			r := c.startReplica(t, "webhook-0", clocktesting.NewFakeClock(time.Now()))
			r.elector.grant()
			waitFor(t, "the object exists", func() bool { return tt.exists(t, c) })
			waitFor(t, "the Created events", func() bool { return len(r.recorder.Events) == 2 })
			r.events()

			if err := tt.delete(c); err != nil {
				t.Fatal(err)
			}
			waitForWithin(t, restoreTimeout, "the object is restored", func() bool { return tt.exists(t, c) })

			waitFor(t, "the restore event", func() bool { return len(r.recorder.Events) > 0 })
			if got := r.restores(tt.object); got != 1 {
				t.Errorf("restores{object=%s} = %v, want 1", tt.object, got)
			}
			events := r.events()
			if len(events) != 1 || !strings.HasPrefix(events[0], "Warning Restored Restored "+tt.object) || !strings.Contains(events[0], "object was deleted") {
				t.Errorf("events = %q, want one Warning Restored event naming the deletion", events)
			}
			if tt.object == ObjectCSIDriver {
				got := c.csiDriver(t).Spec.ServiceAccountTokenInSecrets
				if diff := cmp.Diff(ptr.To(true), got); diff != "" {
					t.Errorf("recreated CSIDriver serviceAccountTokenInSecrets (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestReconcilerRestoresAlteredObjects(t *testing.T) {
	t.Parallel()
	attackerCA := pemCA(t, newTestCA(t, time.Now().Add(time.Hour)))
	tests := []struct {
		name       string
		object     string
		alter      func(w *admissionregistrationv1.MutatingWebhookConfiguration, d *storagev1.CSIDriver)
		wantChange string
	}{
		{
			name: "failure policy ignore", object: ObjectWebhookConfiguration, wantChange: "webhooks[0].failurePolicy",
			alter: func(w *admissionregistrationv1.MutatingWebhookConfiguration, _ *storagev1.CSIDriver) {
				w.Webhooks[0].FailurePolicy = ptr.To(admissionregistrationv1.Ignore)
			},
		},
		{
			name: "namespace selector emptied", object: ObjectWebhookConfiguration, wantChange: "webhooks[1].namespaceSelector",
			alter: func(w *admissionregistrationv1.MutatingWebhookConfiguration, _ *storagev1.CSIDriver) {
				w.Webhooks[1].NamespaceSelector = &metav1.LabelSelector{MatchLabels: map[string]string{"nothing": "matches"}}
			},
		},
		{
			name: "service redirected", object: ObjectWebhookConfiguration, wantChange: "webhooks[0].clientConfig.service",
			alter: func(w *admissionregistrationv1.MutatingWebhookConfiguration, _ *storagev1.CSIDriver) {
				w.Webhooks[0].ClientConfig.Service.Name = "evil"
			},
		},
		{
			name: "webhooks removed", object: ObjectWebhookConfiguration, wantChange: "webhooks (0 entries, want 2)",
			alter: func(w *admissionregistrationv1.MutatingWebhookConfiguration, _ *storagev1.CSIDriver) {
				w.Webhooks = nil
			},
		},
		{
			name: "caBundle replaced", object: ObjectWebhookConfiguration, wantChange: "webhooks[1].clientConfig.caBundle",
			alter: func(w *admissionregistrationv1.MutatingWebhookConfiguration, _ *storagev1.CSIDriver) {
				w.Webhooks[1].ClientConfig.CABundle = attackerCA
			},
		},
		{
			name: "token audience changed", object: ObjectCSIDriver, wantChange: "spec.tokenRequests",
			alter: func(_ *admissionregistrationv1.MutatingWebhookConfiguration, d *storagev1.CSIDriver) {
				d.Spec.TokenRequests[0].Audience = "kubernetes"
			},
		},
		{
			name: "republish turned off", object: ObjectCSIDriver, wantChange: "spec.requiresRepublish",
			alter: func(_ *admissionregistrationv1.MutatingWebhookConfiguration, d *storagev1.CSIDriver) {
				d.Spec.RequiresRepublish = ptr.To(false)
			},
		},
		{
			name: "token moved to volume context", object: ObjectCSIDriver, wantChange: "spec.serviceAccountTokenInSecrets",
			alter: func(_ *admissionregistrationv1.MutatingWebhookConfiguration, d *storagev1.CSIDriver) {
				d.Spec.ServiceAccountTokenInSecrets = ptr.To(false)
			},
		},
		{
			name: "token in secrets unset", object: ObjectCSIDriver, wantChange: "spec.serviceAccountTokenInSecrets",
			alter: func(_ *admissionregistrationv1.MutatingWebhookConfiguration, d *storagev1.CSIDriver) {
				d.Spec.ServiceAccountTokenInSecrets = nil
			},
		},
		{
			name: "immutable attachRequired", object: ObjectCSIDriver, wantChange: "spec.attachRequired",
			alter: func(_ *admissionregistrationv1.MutatingWebhookConfiguration, d *storagev1.CSIDriver) {
				d.Spec.AttachRequired = ptr.To(true)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			c := newCluster(t)
			r := c.startReplica(t, "webhook-0", clocktesting.NewFakeClock(time.Now()))
			r.elector.grant()
			waitFor(t, "both objects exist", func() bool {
				return webhooksAsDesired(c.webhookConfig(t), nil) && driverAsDesired(c.csiDriver(t))
			})
			waitFor(t, "the Created events", func() bool { return len(r.recorder.Events) == 2 })
			r.events()

			ctx := context.Background()
			w, d := c.webhookConfig(t), c.csiDriver(t)
			tt.alter(w, d)
			var err error
			if tt.object == ObjectWebhookConfiguration {
				_, err = c.admin.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(ctx, w, metav1.UpdateOptions{})
			} else {
				_, err = c.admin.StorageV1().CSIDrivers().Update(ctx, d, metav1.UpdateOptions{})
			}
			if err != nil {
				t.Fatal(err)
			}

			waitForWithin(t, restoreTimeout, "the object is restored", func() bool {
				return webhooksAsDesired(c.webhookConfig(t), nil) && driverAsDesired(c.csiDriver(t))
			})
			waitFor(t, "the restore event", func() bool { return len(r.recorder.Events) > 0 })
			if got := r.restores(tt.object); got != 1 {
				t.Errorf("restores{object=%s} = %v, want 1", tt.object, got)
			}
			events := r.events()
			if len(events) != 1 || !strings.Contains(events[0], tt.wantChange) {
				t.Errorf("events = %q, want one naming %s", events, tt.wantChange)
			}
		})
	}
}

func TestReconcilerRecreatesForImmutableField(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	r := c.startReplica(t, "webhook-0", clocktesting.NewFakeClock(time.Now()))
	r.elector.grant()
	waitFor(t, "the CSIDriver exists", func() bool { return driverAsDesired(c.csiDriver(t)) })

	d := c.csiDriver(t)
	d.Spec.VolumeLifecycleModes = []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecyclePersistent}
	_, err := c.admin.StorageV1().CSIDrivers().Update(context.Background(), d, metav1.UpdateOptions{})
	// The fake object tracker sends the watch event before Update returns,
	// so the reconciler may already have deleted the object, and Update
	// then reports NotFound although it took effect.
	if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}

	waitForWithin(t, restoreTimeout, "the CSIDriver is restored", func() bool { return driverAsDesired(c.csiDriver(t)) })
	if got := countActions(r.client, "delete", "csidrivers"); got != 1 {
		t.Errorf("CSIDriver deletes = %d, want 1: volumeLifecycleModes cannot be updated", got)
	}
}

func TestReconcilerCABundle(t *testing.T) {
	t.Parallel()
	clock := clocktesting.NewFakeClock(time.Now())
	c := newCluster(t)
	caA := newTestCA(t, clock.Now().Add(24*time.Hour))
	caB := newTestCA(t, clock.Now().Add(24*time.Hour))
	caNext := newTestCA(t, clock.Now().Add(48*time.Hour))
	createReplicaPod(t, c, "webhook-0", pemCA(t, caA))
	createReplicaPod(t, c, "webhook-1", pemCA(t, caB))
	// A pod without the replica label must not add to the caBundle.
	createPod(t, c, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "intruder", Namespace: testObjects.Namespace,
		Annotations: map[string]string{webhook.AnnotationWebhookCA: string(pemCA(t, newTestCA(t, clock.Now().Add(time.Hour))))}}})

	r := c.startReplica(t, "webhook-0", clock)
	r.elector.grant()
	both := bundleOf(t, caA, caB)
	waitFor(t, "the caBundle holds both replicas' CAs", func() bool { return webhooksAsDesired(c.webhookConfig(t), both) })

	// webhook-1 rotates: it publishes its current and next CA.
	annotateReplicaPod(t, c, "webhook-1", append(pemCA(t, caB), pemCA(t, caNext)...))
	withNext := bundleOf(t, caA, caB, caNext)
	waitForWithin(t, restoreTimeout, "the caBundle adds the next CA", func() bool { return webhooksAsDesired(c.webhookConfig(t), withNext) })

	// After switching it publishes only the new CA; the old one stays for
	// the retention period.
	// A later CA that arrives after those events proves that the caBundle
	// was computed after them.
	annotateReplicaPod(t, c, "webhook-1", pemCA(t, caNext))
	clock.Step(5 * time.Minute)
	deletePod(t, c, "webhook-0")
	waitFor(t, "the reconciler sees the deletion", func() bool {
		_, err := r.rec.podLister.Get("webhook-0")
		return err != nil
	})
	caLater := newTestCA(t, clock.Now().Add(72*time.Hour))
	annotateReplicaPod(t, c, "webhook-1", append(pemCA(t, caNext), pemCA(t, caLater)...))
	retained := bundleOf(t, caA, caB, caNext, caLater)
	waitForWithin(t, restoreTimeout, "the caBundle keeps the CAs within retention", func() bool {
		return webhooksAsDesired(c.webhookConfig(t), retained)
	})

	// Past the retention the periodic resync drops caA and caB.
	clock.Step(time.Hour)
	waitFor(t, "the caBundle drops CAs past retention", func() bool {
		return webhooksAsDesired(c.webhookConfig(t), bundleOf(t, caNext, caLater))
	})
	if got := r.restores(ObjectWebhookConfiguration); got != 0 {
		t.Errorf("restores = %v after routine caBundle updates, want 0", got)
	}
}

func TestReconcilerLeaderChange(t *testing.T) {
	t.Parallel()
	c := newCluster(t)
	a := c.startReplica(t, "webhook-0", clocktesting.NewFakeClock(time.Now()))
	b := c.startReplica(t, "webhook-1", clocktesting.NewFakeClock(time.Now()))

	a.elector.grant()
	waitFor(t, "the leader creates both objects", func() bool {
		return webhooksAsDesired(c.webhookConfig(t), nil) && driverAsDesired(c.csiDriver(t))
	})
	if got := countWrites(b.client); got != 0 {
		t.Fatalf("follower wrote %d times, want 0", got)
	}

	// The follower leaves a deleted object alone. By the time its own
	// cache holds the restored object, it has handled the deletion.
	deleteWebhookConfig(t, c)
	waitForWithin(t, restoreTimeout, "the leader restores", func() bool { return webhooksAsDesired(c.webhookConfig(t), nil) })
	restored := c.webhookConfig(t)
	waitFor(t, "the follower's cache holds the restored object", func() bool {
		cached, err := b.rec.webhookLister.Get(testObjects.WebhookConfigName)
		return err == nil && cached.ResourceVersion == restored.ResourceVersion
	})
	if got := countWrites(b.client); got != 0 {
		t.Fatalf("follower wrote %d times, want 0", got)
	}

	// Leadership moves to b. a stops writing; b restores the next deletion.
	a.elector.revoke()
	b.elector.grant()
	writesOfA := countWrites(a.client)
	deleteWebhookConfig(t, c)
	waitForWithin(t, restoreTimeout, "the new leader restores", func() bool { return webhooksAsDesired(c.webhookConfig(t), nil) })
	if got := countWrites(a.client); got != writesOfA {
		t.Errorf("former leader wrote %d times after losing leadership", got-writesOfA)
	}
	if got := b.restores(ObjectWebhookConfiguration); got != 1 {
		t.Errorf("new leader's restores = %v, want 1: it had seen the configuration before the deletion", got)
	}
}

func deleteWebhookConfig(t *testing.T, c *cluster) {
	t.Helper()
	err := c.admin.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(context.Background(), testObjects.WebhookConfigName, metav1.DeleteOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

func createReplicaPod(t *testing.T, c *cluster, name string, caPEM []byte) {
	t.Helper()
	createPod(t, c, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Name: name, Namespace: testObjects.Namespace, Labels: replicaLabels,
			Annotations: map[string]string{webhook.AnnotationWebhookCA: string(caPEM)},
		},
		Status: corev1.PodStatus{Phase: corev1.PodRunning},
	})
}

func createPod(t *testing.T, c *cluster, pod *corev1.Pod) {
	t.Helper()
	if _, err := c.admin.CoreV1().Pods(pod.Namespace).Create(context.Background(), pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func annotateReplicaPod(t *testing.T, c *cluster, name string, caPEM []byte) {
	t.Helper()
	pods := c.admin.CoreV1().Pods(testObjects.Namespace)
	pod, err := pods.Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod.Annotations[webhook.AnnotationWebhookCA] = string(caPEM)
	if _, err := pods.Update(context.Background(), pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
}

func deletePod(t *testing.T, c *cluster, name string) {
	t.Helper()
	if err := c.admin.CoreV1().Pods(testObjects.Namespace).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

func newTestCA(t *testing.T, notAfter time.Time) *x509.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "test CA"},
		NotBefore:             notAfter.Add(-48 * time.Hour),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func pemCA(t *testing.T, cert *x509.Certificate) []byte {
	t.Helper()
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})
}

// bundleOf returns the caBundle the reconciler writes for certs: sorted by
// NotBefore, then by DER.
func bundleOf(t *testing.T, certs ...*x509.Certificate) []byte {
	t.Helper()
	tracker := newCATracker(time.Hour)
	now := certs[0].NotBefore.Add(time.Minute)
	for _, cert := range certs {
		tracker.seen[sha256.Sum256(cert.Raw)] = &seenCA{cert: cert, lastSeen: now}
	}
	out := tracker.bundle(now)
	if n := bytes.Count(out, []byte("BEGIN CERTIFICATE")); n != len(certs) {
		t.Fatalf("bundle has %d certificates, want %d", n, len(certs))
	}
	return out
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
