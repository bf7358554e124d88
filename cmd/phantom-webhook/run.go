package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"

	"github.com/phantom-sec/phantom/pkg/reconcile"
	"github.com/phantom-sec/phantom/pkg/webhook"
)

// switchDelay is how long a replica serves its old certificate after the
// caBundle trusts the new CA, so that every API server's watch of the
// webhook configuration has caught up.
const switchDelay = 30 * time.Second

// deps are the parts of the process that tests replace.
type deps struct {
	Client kubernetes.Interface
	Logger *slog.Logger
	Clock  clock.WithTicker
	// Listener, when set, replaces listening on Config.ListenAddr.
	Listener net.Listener
}

// run wires the webhook and runs it until ctx ends or a part fails.
func run(ctx context.Context, cfg Config, d deps) error {
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	namespaceFactory := informers.NewSharedInformerFactory(d.Client, 0)
	namespaceInformer := namespaceFactory.Core().V1().Namespaces()
	handler, err := newAdmissionHandler(cfg, d, registry, namespaceInformer.Lister())
	if err != nil {
		return err
	}
	namespacesSynced := namespaceInformer.Informer().HasSynced

	bundles := webhook.NewBundleWatcher(cfg.WebhookConfigName)
	certs, err := newCertManager(cfg, d, bundles)
	if err != nil {
		return err
	}

	broadcaster := record.NewBroadcaster(record.WithContext(ctx))
	defer broadcaster.Shutdown()
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: d.Client.CoreV1().Events("")})
	recorder := broadcaster.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "phantom-webhook"})

	reconciler, err := newReconciler(cfg, d, registry, recorder, bundles)
	if err != nil {
		return err
	}

	server, err := webhook.NewServer(webhook.ServerConfig{
		Mutate:         handler,
		GetCertificate: certs.GetCertificate,
		Ready: func() error {
			if !namespacesSynced() || !reconciler.HasSynced() {
				return errors.New("informer caches are not synced yet")
			}
			return certs.Ready()
		},
		Gatherer: registry,
		Logger:   d.Logger,
	})
	if err != nil {
		return err
	}
	listener := d.Listener
	if listener == nil {
		if listener, err = net.Listen("tcp", cfg.ListenAddr); err != nil {
			return fmt.Errorf("listen on %s: %w", cfg.ListenAddr, err)
		}
	}

	d.Logger.Info("phantom-webhook starting", "namespace", cfg.Namespace, "pod", cfg.PodName, "driver", cfg.DriverName)
	group, ctx := errgroup.WithContext(ctx)
	namespaceFactory.Start(ctx.Done())
	defer namespaceFactory.Shutdown()
	group.Go(func() error { return server.Serve(ctx, listener) })
	group.Go(func() error { return certs.Run(ctx) })
	group.Go(func() error { return reconciler.Run(ctx) })
	err = group.Wait()
	d.Logger.Info("phantom-webhook stopped")
	return err
}

func newCertManager(cfg Config, d deps, bundles *webhook.BundleWatcher) (*webhook.CertManager, error) {
	return webhook.NewCertManager(webhook.CertManagerConfig{
		ServiceName: cfg.ServiceName,
		Namespace:   cfg.Namespace,
		Validity:    cfg.CertValidity,
		SwitchDelay: switchDelay,
		Publisher:   webhook.PodPublisher{Client: d.Client.CoreV1(), Namespace: cfg.Namespace, PodName: cfg.PodName},
		Trust:       bundles,
		Clock:       d.Clock,
		Logger:      d.Logger,
	})
}

func newAdmissionHandler(cfg Config, d deps, reg prometheus.Registerer, namespaces corev1listers.NamespaceLister) (*webhook.Handler, error) {
	metrics, err := webhook.NewMetrics(reg)
	if err != nil {
		return nil, err
	}
	mutator, err := webhook.NewMutator(webhook.MutatorConfig{
		DriverName:   cfg.DriverName,
		OwnNamespace: cfg.Namespace,
		Namespaces:   webhook.ListerNamespaces{Lister: namespaces, Client: d.Client.CoreV1()},
	})
	if err != nil {
		return nil, err
	}
	return webhook.NewHandler(webhook.HandlerConfig{Mutator: mutator, Metrics: metrics, Logger: d.Logger})
}

func newReconciler(cfg Config, d deps, reg prometheus.Registerer, recorder record.EventRecorder, bundles *webhook.BundleWatcher) (*reconcile.Reconciler, error) {
	selector, err := labels.Parse(cfg.ReplicaSelector)
	if err != nil {
		return nil, fmt.Errorf("parse --replica-selector: %w", err)
	}
	return reconcile.New(reconcile.Config{
		Objects:         cfg.objects(),
		Client:          d.Client,
		ReplicaSelector: selector,
		PodName:         cfg.PodName,
		Elector: &reconcile.LeaseElector{
			Client:    d.Client,
			Namespace: cfg.Namespace,
			LeaseName: cfg.LeaderElectionID,
			Identity:  cfg.PodName,
			Logger:    d.Logger,
		},
		Recorder:              recorder,
		Registerer:            reg,
		Logger:                d.Logger,
		Clock:                 d.Clock,
		WebhookConfigHandlers: []cache.ResourceEventHandler{bundles.EventHandler()},
	})
}
