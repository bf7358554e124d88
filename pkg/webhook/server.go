package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// shutdownTimeout bounds how long in-flight admissions may take to finish
// once the server stops.
const shutdownTimeout = 10 * time.Second

// ServerConfig configures a Server.
type ServerConfig struct {
	// Mutate serves /mutate.
	Mutate http.Handler
	// GetCertificate returns the serving certificate for each handshake.
	GetCertificate func(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// Ready returns nil when the replica may receive admission requests.
	Ready    func() error
	Gatherer prometheus.Gatherer
	Logger   *slog.Logger
}

// Server is the HTTPS server of the webhook: /mutate, /healthz, /readyz
// and /metrics, TLS 1.2 or later only.
type Server struct {
	cfg  ServerConfig
	http *http.Server
}

// NewServer returns a Server.
func NewServer(cfg ServerConfig) (*Server, error) {
	if cfg.Mutate == nil || cfg.GetCertificate == nil || cfg.Ready == nil || cfg.Gatherer == nil || cfg.Logger == nil {
		return nil, errors.New("new server: Mutate, GetCertificate, Ready, Gatherer and Logger must be set")
	}

	mux := http.NewServeMux()
	mux.Handle("/mutate", cfg.Mutate)
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, _ *http.Request) {
		if err := cfg.Ready(); err != nil {
			http.Error(w, "not ready: "+err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.Handle("/metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{}))

	s := &Server{cfg: cfg}
	s.http = &http.Server{
		Handler: mux,
		TLSConfig: &tls.Config{
			MinVersion:     tls.VersionTLS12,
			GetCertificate: cfg.GetCertificate,
		},
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       90 * time.Second,
		// Failed handshakes (scanners, old TLS versions) are not actionable.
		ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
	}
	return s, nil
}

// Serve serves HTTPS on ln until ctx ends, then shuts down gracefully. It
// closes ln.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	errCh := make(chan error, 1)
	go func() { errCh <- s.http.ServeTLS(ln, "", "") }()
	s.cfg.Logger.Info("webhook server listening", "addr", ln.Addr().String())

	select {
	case err := <-errCh:
		return fmt.Errorf("serve webhook: %w", err)
	case <-ctx.Done():
	}

	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), shutdownTimeout)
	defer cancel()
	if err := s.http.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shut down webhook server: %w", err)
	}
	s.cfg.Logger.Info("webhook server stopped")
	return nil
}
