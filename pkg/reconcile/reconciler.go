package reconcile

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	admissionlisters "k8s.io/client-go/listers/admissionregistration/v1"
	corev1listers "k8s.io/client-go/listers/core/v1"
	storagelisters "k8s.io/client-go/listers/storage/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/utils/clock"
)

// Values of the `object` label of the restores metric, also the work queue
// keys.
const (
	ObjectWebhookConfiguration = "mutatingwebhookconfiguration"
	ObjectCSIDriver            = "csidriver"
)

// Defaults of Config.
const (
	DefaultResyncPeriod = 30 * time.Second
	DefaultCARetention  = 10 * time.Minute
)

// Retry backoff of a failed sync. The maximum keeps a restore within a few
// seconds once the API server accepts writes again.
const (
	retryBaseDelay = 100 * time.Millisecond
	retryMaxDelay  = 4 * time.Second
)

// Event reasons.
const (
	ReasonRestored = "Restored"
	ReasonCreated  = "Created"
)

// Log keys.
const (
	logKeyObject  = "object"
	logKeyName    = "name"
	logKeyChanges = "changes"
	logKeyError   = "error"
)

// Elector runs lead each time this replica becomes the leader, with a
// context that ends when it stops being the leader, until ctx ends. It
// never runs two lead calls at once.
type Elector interface {
	Run(ctx context.Context, lead func(ctx context.Context))
}

// Config configures a Reconciler.
type Config struct {
	Objects ObjectConfig
	Client  kubernetes.Interface
	// ReplicaSelector selects the webhook replica pods in Objects.Namespace
	// whose published CAs make up the caBundle.
	ReplicaSelector labels.Selector
	// PodName is this replica's pod, the object of restore Events. When it
	// is empty, Events go to the restored object.
	PodName string
	Elector Elector
	// Recorder records restore Events.
	Recorder   record.EventRecorder
	Registerer prometheus.Registerer
	Logger     *slog.Logger
	Clock      clock.WithTicker
	// ResyncPeriod is how often the leader compares both objects even
	// without a watch event; DefaultResyncPeriod when zero.
	ResyncPeriod time.Duration
	// CARetention is how long a CA stays in the caBundle after its replica
	// stopped publishing it; DefaultCARetention when zero.
	CARetention time.Duration
	// WebhookConfigHandlers also receive the events of the
	// MutatingWebhookConfiguration informer, such as a
	// webhook.BundleWatcher.
	WebhookConfigHandlers []cache.ResourceEventHandler
}

// Reconciler keeps the MutatingWebhookConfiguration and the CSIDriver.
// Every replica runs the informers, so a new leader starts with warm caches
// and with the CAs published recently. Only the leader writes.
type Reconciler struct {
	cfg      Config
	restores *prometheus.CounterVec
	cas      *caTracker

	factories     []informers.SharedInformerFactory
	webhookLister admissionlisters.MutatingWebhookConfigurationLister
	driverLister  storagelisters.CSIDriverLister
	podLister     corev1listers.PodNamespaceLister
	synced        []cache.InformerSynced

	mu    sync.Mutex
	queue workqueue.TypedRateLimitingInterface[string]
	// seen records objects this process has observed, so a creation after
	// a deletion counts as a restore and a first install does not.
	seen map[string]bool
	// written holds the caBundles this reconciler wrote recently, newest
	// last. A live caBundle among them is this reconciler's own work, even
	// when the cache that showed it was behind.
	written [][]byte
}

// maxWrittenBundles bounds Reconciler.written.
const maxWrittenBundles = 8

// New validates cfg and sets up the informers.
func New(cfg Config) (*Reconciler, error) {
	if err := validate(&cfg); err != nil {
		return nil, fmt.Errorf("new reconciler: %w", err)
	}

	r := &Reconciler{
		cfg: cfg,
		restores: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phantom_webhook_restores_total",
			Help: "Objects the reconciler restored after they were deleted or altered, by object.",
		}, []string{"object"}),
		cas:  newCATracker(cfg.CARetention),
		seen: map[string]bool{},
	}
	if err := cfg.Registerer.Register(r.restores); err != nil {
		return nil, fmt.Errorf("register reconciler metrics: %w", err)
	}
	for _, object := range []string{ObjectWebhookConfiguration, ObjectCSIDriver} {
		r.restores.WithLabelValues(object)
	}
	if err := r.setupInformers(); err != nil {
		return nil, err
	}
	return r, nil
}

func validate(cfg *Config) error {
	errs := cfg.Objects.Validate()
	if cfg.Client == nil || cfg.ReplicaSelector == nil || cfg.Elector == nil || cfg.Recorder == nil ||
		cfg.Registerer == nil || cfg.Logger == nil || cfg.Clock == nil {
		errs = append(errs, errors.New("Client, ReplicaSelector, Elector, Recorder, Registerer, Logger and Clock must be set"))
	}
	if cfg.ResyncPeriod == 0 {
		cfg.ResyncPeriod = DefaultResyncPeriod
	}
	if cfg.CARetention == 0 {
		cfg.CARetention = DefaultCARetention
	}
	if cfg.ResyncPeriod < 0 || cfg.CARetention < 0 {
		errs = append(errs, errors.New("ResyncPeriod and CARetention must not be negative"))
	}
	return errors.Join(errs...)
}

// setupInformers creates one informer per object kind, each narrowed to
// the objects the reconciler keeps.
func (r *Reconciler) setupInformers() error {
	byName := func(name string) informers.SharedInformerOption {
		return informers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
		})
	}
	webhookFactory := informers.NewSharedInformerFactoryWithOptions(r.cfg.Client, 0, byName(r.cfg.Objects.WebhookConfigName))
	driverFactory := informers.NewSharedInformerFactoryWithOptions(r.cfg.Client, 0, byName(r.cfg.Objects.DriverName))
	podFactory := informers.NewSharedInformerFactoryWithOptions(r.cfg.Client, 0,
		informers.WithNamespace(r.cfg.Objects.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = r.cfg.ReplicaSelector.String() }))
	r.factories = []informers.SharedInformerFactory{webhookFactory, driverFactory, podFactory}

	webhookInformer := webhookFactory.Admissionregistration().V1().MutatingWebhookConfigurations()
	driverInformer := driverFactory.Storage().V1().CSIDrivers()
	podInformer := podFactory.Core().V1().Pods()
	r.webhookLister = webhookInformer.Lister()
	r.driverLister = driverInformer.Lister()
	r.podLister = podInformer.Lister().Pods(r.cfg.Objects.Namespace)

	handlers := []struct {
		informer cache.SharedIndexInformer
		handler  cache.ResourceEventHandler
	}{
		{webhookInformer.Informer(), r.objectHandler(ObjectWebhookConfiguration, r.cfg.Objects.WebhookConfigName)},
		{driverInformer.Informer(), r.objectHandler(ObjectCSIDriver, r.cfg.Objects.DriverName)},
		{podInformer.Informer(), r.podHandler()},
	}
	for _, h := range r.cfg.WebhookConfigHandlers {
		handlers = append(handlers, struct {
			informer cache.SharedIndexInformer
			handler  cache.ResourceEventHandler
		}{webhookInformer.Informer(), h})
	}
	for _, h := range handlers {
		registration, err := h.informer.AddEventHandler(h.handler)
		if err != nil {
			return fmt.Errorf("add informer event handler: %w", err)
		}
		r.synced = append(r.synced, registration.HasSynced)
	}
	return nil
}

// objectHandler queues key for every event on the object called name.
func (r *Reconciler) objectHandler(key, name string) cache.ResourceEventHandler {
	matches := func(obj any) bool {
		if tombstone, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tombstone.Obj
		}
		meta, ok := obj.(metav1.Object)
		return ok && meta.GetName() == name
	}
	return cache.FilteringResourceEventHandler{
		FilterFunc: matches,
		Handler: cache.ResourceEventHandlerFuncs{
			AddFunc:    func(any) { r.markSeen(key); r.enqueue(key) },
			UpdateFunc: func(any, any) { r.enqueue(key) },
			DeleteFunc: func(any) { r.enqueue(key) },
		},
	}
}

// podHandler records the CAs of replica pods and queues the configuration,
// whose caBundle depends on them.
func (r *Reconciler) podHandler() cache.ResourceEventHandler {
	observe := func(obj any) {
		if tombstone, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = tombstone.Obj
		}
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		if err := r.cas.observe(pod, r.cfg.Clock.Now()); err != nil {
			r.cfg.Logger.Warn("ignoring part of a replica's webhook CA", "pod", pod.Name, logKeyError, err)
		}
		r.enqueue(ObjectWebhookConfiguration)
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    observe,
		UpdateFunc: func(_, obj any) { observe(obj) },
		DeleteFunc: observe,
	}
}

// Run starts the informers, waits for their caches, and reconciles while
// this replica is the leader, until ctx ends.
func (r *Reconciler) Run(ctx context.Context) error {
	for _, f := range r.factories {
		f.Start(ctx.Done())
	}
	defer func() {
		for _, f := range r.factories {
			f.Shutdown()
		}
	}()
	if !cache.WaitForCacheSync(ctx.Done(), r.synced...) {
		return fmt.Errorf("wait for reconciler caches: %w", ctx.Err())
	}
	r.cfg.Logger.Debug("reconciler caches synced")

	r.cfg.Elector.Run(ctx, r.lead)
	return nil
}

// HasSynced reports whether the informers have synced.
func (r *Reconciler) HasSynced() bool {
	for _, synced := range r.synced {
		if !synced() {
			return false
		}
	}
	return true
}

// lead reconciles until ctx ends: on every watch event, every
// ResyncPeriod, and after a failed sync with backoff.
func (r *Reconciler) lead(ctx context.Context) {
	r.cfg.Logger.Info("reconciler leading")
	queue := workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](retryBaseDelay, retryMaxDelay),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "phantom-reconciler", Clock: r.cfg.Clock})
	r.mu.Lock()
	r.queue = queue
	r.mu.Unlock()

	var wg sync.WaitGroup
	wg.Go(func() {
		ticker := r.cfg.Clock.NewTicker(r.cfg.ResyncPeriod)
		defer ticker.Stop()
		for {
			queue.Add(ObjectWebhookConfiguration)
			queue.Add(ObjectCSIDriver)
			select {
			case <-ctx.Done():
				queue.ShutDown()
				return
			case <-ticker.C():
			}
		}
	})
	for r.processNext(ctx, queue) {
	}
	wg.Wait()

	r.mu.Lock()
	r.queue = nil
	r.mu.Unlock()
	r.cfg.Logger.Info("reconciler stopped leading")
}

func (r *Reconciler) enqueue(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.queue != nil {
		r.queue.Add(key)
	}
}

func (r *Reconciler) wasSeen(key string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.seen[key]
}

func (r *Reconciler) markSeen(key string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.seen[key] = true
}

// processNext syncs one queued object. It returns false once the queue
// shuts down.
func (r *Reconciler) processNext(ctx context.Context, queue workqueue.TypedRateLimitingInterface[string]) bool {
	key, shutdown := queue.Get()
	if shutdown {
		return false
	}
	defer queue.Done(key)
	// Get keeps returning queued keys after ShutDown; a former leader must
	// not write.
	if ctx.Err() != nil {
		return false
	}

	var err error
	switch key {
	case ObjectWebhookConfiguration:
		err = r.syncWebhookConfiguration(ctx)
	case ObjectCSIDriver:
		err = r.syncCSIDriver(ctx)
	}
	switch {
	case err == nil || ctx.Err() != nil:
	case apierrors.IsConflict(err):
		// The cache was behind the API server; the watch event that
		// brings it up to date queues the object again.
		r.cfg.Logger.Debug("reconcile conflict, retrying", logKeyObject, key, logKeyError, err)
		queue.AddRateLimited(key)
		return true
	default:
		r.cfg.Logger.Error("reconcile failed, retrying", logKeyObject, key, logKeyError, err)
		queue.AddRateLimited(key)
		return true
	}
	queue.Forget(key)
	return true
}

// syncWebhookConfiguration creates or repairs the webhook configuration
// and keeps its caBundle equal to the CAs of the replicas.
func (r *Reconciler) syncWebhookConfiguration(ctx context.Context) error {
	bundle, err := r.currentBundle()
	if err != nil {
		return err
	}
	desired := DesiredWebhookConfiguration(r.cfg.Objects)
	for i := range desired.Webhooks {
		desired.Webhooks[i].ClientConfig.CABundle = bundle
	}
	client := r.cfg.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()

	live, err := r.webhookLister.Get(desired.Name)
	if apierrors.IsNotFound(err) {
		// Read before creating: the informer marks the new object seen.
		seenBefore := r.wasSeen(ObjectWebhookConfiguration)
		if _, err := client.Create(ctx, desired, metav1.CreateOptions{}); err != nil {
			return ignoreStale(fmt.Errorf("create mutating webhook configuration %s: %w", desired.Name, err))
		}
		r.wroteBundle(bundle)
		r.recordCreate(ObjectWebhookConfiguration, desired.Name, desired, seenBefore)
		return nil
	}
	if err != nil {
		return fmt.Errorf("get mutating webhook configuration %s: %w", desired.Name, err)
	}

	changes := webhookChanges(desired.Webhooks, live.Webhooks)
	bundleChanges := caBundleChanges(live.Webhooks, bundle)
	missingLabels := !hasLabels(live.Labels, desired.Labels)
	if len(changes) == 0 && len(bundleChanges) == 0 && !missingLabels {
		return nil
	}

	updated := live.DeepCopy()
	updated.Webhooks = desired.Webhooks
	updated.Labels = mergeLabels(updated.Labels, desired.Labels)
	if _, err := client.Update(ctx, updated, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update mutating webhook configuration %s: %w", desired.Name, err)
	}
	tampered := r.bundleTampered(live.Webhooks)
	r.wroteBundle(bundle)

	if tampered {
		changes = append(changes, bundleChanges...)
	}
	if len(changes) > 0 {
		r.recordRestore(ObjectWebhookConfiguration, desired.Name, live, changes)
		return nil
	}
	r.cfg.Logger.Info("webhook caBundle updated", logKeyName, desired.Name, "certificates", strings.Count(string(bundle), "BEGIN CERTIFICATE"))
	return nil
}

// currentBundle observes every replica pod and returns the caBundle.
func (r *Reconciler) currentBundle() ([]byte, error) {
	pods, err := r.podLister.List(r.cfg.ReplicaSelector)
	if err != nil {
		return nil, fmt.Errorf("list webhook replica pods: %w", err)
	}
	now := r.cfg.Clock.Now()
	for _, pod := range pods {
		// Problems were logged when the pod event arrived.
		_ = r.cas.observe(pod, now)
	}
	return r.cas.bundle(now), nil
}

// bundleTampered reports whether someone other than the reconciler changed
// the caBundle. That is the case when the caBundle contains a certificate
// no replica published, or when this reconciler has written caBundles and
// the live one differs from all of them.
//
// NOTE: a reconciler that has not written a caBundle yet cannot tell an
// emptied caBundle from an outdated one, so it counts that as routine.
func (r *Reconciler) bundleTampered(live []admissionregistrationv1.MutatingWebhook) bool {
	r.mu.Lock()
	written := r.written
	r.mu.Unlock()
	for _, hook := range live {
		if !r.cas.known(hook.ClientConfig.CABundle) {
			return true
		}
		ours := slices.ContainsFunc(written, func(b []byte) bool { return bytes.Equal(b, hook.ClientConfig.CABundle) })
		if len(written) > 0 && !ours {
			return true
		}
	}
	return false
}

func (r *Reconciler) wroteBundle(bundle []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.written = append(r.written, bytes.Clone(bundle))
	if len(r.written) > maxWrittenBundles {
		r.written = r.written[1:]
	}
}

// syncCSIDriver creates or repairs the CSIDriver object. Fields that
// cannot be updated are repaired by deleting and creating it again.
func (r *Reconciler) syncCSIDriver(ctx context.Context) error {
	desired := DesiredCSIDriver(r.cfg.Objects)
	client := r.cfg.Client.StorageV1().CSIDrivers()

	live, err := r.driverLister.Get(desired.Name)
	if apierrors.IsNotFound(err) {
		seenBefore := r.wasSeen(ObjectCSIDriver)
		if _, err := client.Create(ctx, desired, metav1.CreateOptions{}); err != nil {
			return ignoreStale(fmt.Errorf("create CSIDriver %s: %w", desired.Name, err))
		}
		r.recordCreate(ObjectCSIDriver, desired.Name, desired, seenBefore)
		return nil
	}
	if err != nil {
		return fmt.Errorf("get CSIDriver %s: %w", desired.Name, err)
	}

	changes, immutable := csiDriverChanges(desired.Spec, live.Spec)
	missingLabels := !hasLabels(live.Labels, desired.Labels)
	if len(changes) == 0 && !missingLabels {
		return nil
	}

	if immutable {
		err = r.recreateCSIDriver(ctx, live, desired)
	} else {
		updated := live.DeepCopy()
		applyCSIDriverSpec(&updated.Spec, desired.Spec)
		updated.Labels = mergeLabels(updated.Labels, desired.Labels)
		_, err = client.Update(ctx, updated, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("update CSIDriver %s: %w", desired.Name, err)
	}
	if len(changes) > 0 {
		r.recordRestore(ObjectCSIDriver, desired.Name, live, changes)
	}
	return nil
}

// recreateCSIDriver deletes the altered object, only if it is still the
// one the reconciler looked at, and creates the desired one.
func (r *Reconciler) recreateCSIDriver(ctx context.Context, live, desired *storagev1.CSIDriver) error {
	client := r.cfg.Client.StorageV1().CSIDrivers()
	err := client.Delete(ctx, live.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &live.UID}})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("delete altered CSIDriver: %w", err)
	}
	if _, err := client.Create(ctx, desired, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("create CSIDriver again: %w", err)
	}
	return nil
}

// recordCreate reports a created object: a restore if this process had
// seen it before, otherwise a first installation.
func (r *Reconciler) recordCreate(object, name string, created metav1.Object, seenBefore bool) {
	r.markSeen(object)
	if seenBefore {
		r.recordRestore(object, name, created, []string{"object was deleted"})
		return
	}
	r.cfg.Logger.Info("object created", logKeyObject, object, logKeyName, name)
	r.cfg.Recorder.Eventf(r.eventObject(created), corev1.EventTypeNormal, ReasonCreated, "Created %s %s", object, name)
}

// recordRestore logs, counts and records an Event for a restore.
func (r *Reconciler) recordRestore(object, name string, restored metav1.Object, changes []string) {
	r.restores.WithLabelValues(object).Inc()
	r.cfg.Logger.Warn("object restored", logKeyObject, object, logKeyName, name, logKeyChanges, changes)
	r.cfg.Recorder.Eventf(r.eventObject(restored), corev1.EventTypeWarning, ReasonRestored,
		"Restored %s %s: %s", object, name, strings.Join(changes, ", "))
}

// eventObject returns this replica's pod, or the restored object when the
// pod is unknown.
func (r *Reconciler) eventObject(restored metav1.Object) *corev1.ObjectReference {
	if r.cfg.PodName == "" {
		ref := &corev1.ObjectReference{Name: restored.GetName(), UID: restored.GetUID()}
		switch restored.(type) {
		case *admissionregistrationv1.MutatingWebhookConfiguration:
			ref.APIVersion, ref.Kind = "admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration"
		case *storagev1.CSIDriver:
			ref.APIVersion, ref.Kind = "storage.k8s.io/v1", "CSIDriver"
		}
		return ref
	}
	ref := &corev1.ObjectReference{APIVersion: "v1", Kind: "Pod", Namespace: r.cfg.Objects.Namespace, Name: r.cfg.PodName}
	if pod, err := r.podLister.Get(r.cfg.PodName); err == nil {
		ref.UID = pod.UID
	}
	return ref
}

// ignoreStale drops an AlreadyExists error of a create: the informer cache
// had not seen the object yet, and its add event queues it again.
func ignoreStale(err error) error {
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

func hasLabels(have, want map[string]string) bool {
	for k, v := range want {
		if have[k] != v {
			return false
		}
	}
	return true
}

func mergeLabels(have, want map[string]string) map[string]string {
	out := make(map[string]string, len(have)+len(want))
	for k, v := range have {
		out[k] = v
	}
	for k, v := range want {
		out[k] = v
	}
	return out
}
