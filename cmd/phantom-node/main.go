// Command phantom-node is Phantom's CSI node plugin. It runs on every node,
// registers the driver secrets.phantom.dev with kubelet and delivers
// OpenBao secrets into pod tmpfs volumes.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/sync/errgroup"

	"github.com/phantom-sec/phantom/driver"
	"github.com/phantom-sec/phantom/pkg/bao"
	"github.com/phantom-sec/phantom/pkg/circuit"
	"github.com/phantom-sec/phantom/pkg/fetch"
	"github.com/phantom-sec/phantom/pkg/registration"
	"github.com/phantom-sec/phantom/pkg/tmpfs"
	"github.com/phantom-sec/phantom/pkg/version"
)

func main() {
	cfg, err := parseFlags(os.Args[1:], os.Getenv)
	if errors.Is(err, flag.ErrHelp) {
		os.Exit(0)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "phantom-node: %v\n", err)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, cfg); err != nil {
		cfg.logger.Error("phantom-node stopped", "error", err.Error())
		os.Exit(1)
	}
}

// run wires the daemon and serves until ctx is done.
func run(ctx context.Context, cfg *config) error {
	log := cfg.logger
	registry := prometheus.NewRegistry()
	registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	// The breaker exists before the client, and its probe needs the client.
	var client *bao.Client
	breaker := circuit.New(circuit.Config{
		Name:       "OpenBao",
		Probe:      func(ctx context.Context) error { return client.Probe(ctx) },
		Logger:     log,
		Registerer: registry,
	})
	defer breaker.Close()
	client, err := bao.New(bao.Config{
		Address:    cfg.openbaoAddr,
		CAFile:     cfg.openbaoCAFile,
		AuthMethod: cfg.authMethod,
		AuthMount:  cfg.authMount,
		Logger:     log,
		Registerer: registry,
		Breaker:    breaker,
	})
	if err != nil {
		return err
	}
	persisted, err := openState(cfg, log, registry)
	if err != nil {
		return err
	}
	mounter := tmpfs.NewMounter(log)
	protection := startProtection(cfg, log, registry, mounter)
	d, err := driver.New(driver.Config{
		Name:            driver.DefaultName,
		Version:         version.Version,
		NodeID:          cfg.nodeID,
		Bao:             client,
		Sessions:        bao.NewSessions(client, nil),
		Fetcher:         fetch.New(fetch.Config{KVMount: cfg.kvMount, KVPrefix: cfg.kvPrefix}),
		Mounter:         mounter,
		Protector:       protection.protector,
		Audience:        cfg.audience,
		MaxVolumeBytes:  cfg.tmpfsSizeLimit,
		Cache:           persisted.cache,
		Verifier:        persisted.verifier,
		Breaker:         breaker,
		Index:           persisted.index,
		RefreshInterval: cfg.refreshInterval,
		OutageWait:      cfg.outageWait,
		GracePeriod:     cfg.gracePeriod,
		Logger:          log,
		Registerer:      registry,
	})
	if err != nil {
		return err
	}
	if err := d.Recover(ctx); err != nil {
		return fmt.Errorf("recover volumes from the index: %w", err)
	}

	log.Info("starting phantom-node", "version", version.Version, "node_id", cfg.nodeID,
		"openbao", cfg.openbaoAddr, "auth_method", cfg.authMethod, "auth_mount", client.AuthMount())

	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return d.Run(ctx, cfg.endpoint) })
	g.Go(func() error { return serveHTTP(ctx, cfg.metricsAddr, registry, d, protection) })
	g.Go(func() error { return protection.run(ctx, log) })
	if cfg.registrationDir != "" {
		reg := registration.New(registration.Config{
			DriverName: driver.DefaultName,
			Endpoint:   cfg.kubeletEndpointPath(),
			Dir:        cfg.registrationDir,
			Logger:     log,
		})
		g.Go(func() error { return reg.Run(ctx) })
	}
	return g.Wait()
}

// serveHTTP serves /metrics, /healthz (the process is up), /readyz (the
// CSI server accepts calls) and /status (version and the active
// runtime-protection path, as JSON).
func serveHTTP(ctx context.Context, addr string, registry *prometheus.Registry, d *driver.Driver, protection protection) error {
	if addr == "" {
		return nil
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(registry, promhttp.HandlerOpts{Registry: registry}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("/status", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"version":           version.Version,
			"ready":             d.Ready(),
			"runtimeProtection": protection.status(),
		})
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !d.Ready() {
			http.Error(w, "CSI server not serving yet", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})

	server := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	listener, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen for metrics on %s: %w", addr, err)
	}
	go func() {
		<-ctx.Done()
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = server.Shutdown(shutdownCtx)
	}()
	if err := server.Serve(listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve metrics on %s: %w", addr, err)
	}
	return nil
}
