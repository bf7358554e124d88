package webhook

import (
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	"k8s.io/client-go/tools/cache"
)

// TrustSource reports whether the API server trusts a serving
// certificate, judged from the caBundle of the webhook configuration.
type TrustSource interface {
	// Trusts returns nil when the caBundle of every webhook in the
	// configuration verifies leaf for serverName at the time at.
	Trusts(leaf *x509.Certificate, serverName string, at time.Time) error
	// Changed returns a channel that is closed at the next change of the
	// configuration. Take the channel before calling Trusts, so no change
	// is missed.
	Changed() <-chan struct{}
}

// BundleWatcher is a TrustSource fed by an informer on the
// MutatingWebhookConfiguration named ConfigName.
type BundleWatcher struct {
	configName string

	mu      sync.Mutex
	present bool
	pools   []*x509.CertPool // one per webhook of the configuration
	changed chan struct{}
}

var _ TrustSource = (*BundleWatcher)(nil)

// NewBundleWatcher returns a BundleWatcher for the configuration
// configName. Register BundleWatcher.EventHandler with an informer.
func NewBundleWatcher(configName string) *BundleWatcher {
	return &BundleWatcher{configName: configName, changed: make(chan struct{})}
}

// EventHandler returns the informer handler that feeds the watcher.
func (w *BundleWatcher) EventHandler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { w.observe(obj, false) },
		UpdateFunc: func(_, obj any) { w.observe(obj, false) },
		DeleteFunc: func(obj any) { w.observe(obj, true) },
	}
}

func (w *BundleWatcher) observe(obj any, deleted bool) {
	if tombstone, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = tombstone.Obj
	}
	cfg, ok := obj.(*admissionregistrationv1.MutatingWebhookConfiguration)
	if !ok || cfg.Name != w.configName {
		return
	}
	if deleted {
		cfg = nil
	}
	w.Set(cfg)
}

// Set replaces the observed configuration; nil means it does not exist.
func (w *BundleWatcher) Set(cfg *admissionregistrationv1.MutatingWebhookConfiguration) {
	var pools []*x509.CertPool
	if cfg != nil {
		for _, hook := range cfg.Webhooks {
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(hook.ClientConfig.CABundle)
			pools = append(pools, pool)
		}
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	w.present = cfg != nil
	w.pools = pools
	close(w.changed)
	w.changed = make(chan struct{})
}

// Changed implements TrustSource.
func (w *BundleWatcher) Changed() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.changed
}

// Trusts implements TrustSource.
func (w *BundleWatcher) Trusts(leaf *x509.Certificate, serverName string, at time.Time) error {
	w.mu.Lock()
	present, pools := w.present, w.pools
	w.mu.Unlock()

	if !present {
		return fmt.Errorf("mutating webhook configuration %s does not exist yet", w.configName)
	}
	if len(pools) == 0 {
		return fmt.Errorf("mutating webhook configuration %s has no webhooks", w.configName)
	}
	var errs []error
	for i, pool := range pools {
		_, err := leaf.Verify(x509.VerifyOptions{
			DNSName:     serverName,
			Roots:       pool,
			CurrentTime: at,
			KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("webhooks[%d] caBundle: %w", i, err))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("mutating webhook configuration %s does not trust this replica yet: %w", w.configName, errors.Join(errs...))
	}
	return nil
}
