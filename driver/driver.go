// Package driver implements the CSI Identity and Node services of Phantom's
// node plugin, the driver `secrets.phantom.dev`. NodePublishVolume logs in
// to OpenBao as the pod, reads the volume's secrets and writes them to a
// tmpfs mounted at the target path.
//
// Between publishes the driver keeps volumes current: kubelet republishes
// about every minute (requiresRepublish), and one background goroutine
// renews leases and rotates content when they are due in between. Copies
// of what it read stay in a cache (memory and sealed on the node's tmpfs),
// so pods of one service account share reads and new pods can start while
// OpenBao is unreachable. An index under the state directory lets a
// restarted daemon find its volumes again.
package driver

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/singleflight"
	"google.golang.org/grpc"

	"github.com/phantom-sec/phantom/pkg/bao"
	"github.com/phantom-sec/phantom/pkg/cache"
	"github.com/phantom-sec/phantom/pkg/circuit"
	"github.com/phantom-sec/phantom/pkg/fetch"
	"github.com/phantom-sec/phantom/pkg/satoken"
	"github.com/phantom-sec/phantom/pkg/secret"
	"github.com/phantom-sec/phantom/pkg/state"
	"github.com/phantom-sec/phantom/pkg/tmpfs"
	"github.com/phantom-sec/phantom/pkg/unixsock"
)

// Defaults of Config.
const (
	// DefaultRefreshInterval is how often KV content is read again.
	DefaultRefreshInterval = 5 * time.Minute
	// DefaultOutageWait bounds how long a publish with nothing cached waits
	// for OpenBao to come back; kubelet gives a publish about two minutes.
	DefaultOutageWait = 30 * time.Second
)

// DefaultName is the CSI driver name.
const DefaultName = "secrets.phantom.dev"

// Log keys.
const (
	logKeyVolume    = "volume_id"
	logKeyTarget    = "target_path"
	logKeyPod       = "pod"
	logKeyNamespace = "namespace"
	logKeyMethod    = "method"
	logKeyError     = "error"
	logKeyFiles     = "files"
	logKeyDuration  = "duration"
)

// Mounter mounts and writes Phantom tmpfs volumes. *tmpfs.Mounter
// implements it; tests may wrap it to inject faults.
type Mounter interface {
	Mount(target string, opts tmpfs.MountOptions) (created bool, err error)
	IsMounted(target string) (bool, error)
	Unmount(target string) error
	WriteFiles(target string, files []tmpfs.File, opts tmpfs.WriteOptions, readOnly bool) (changed bool, err error)
	List() ([]string, error)
}

// TokenVerifier verifies a pod's service-account token offline: signature
// against the cluster's keys and issuer. *jwks.Verifier implements it.
type TokenVerifier interface {
	Verify(ctx context.Context, token secret.String) (*satoken.Claims, error)
}

// Config configures a Driver.
type Config struct {
	Name    string
	Version string
	NodeID  string

	// Bao is the OpenBao client; Sessions caches its logins per identity.
	Bao      *bao.Client
	Sessions *bao.Sessions
	Fetcher  *fetch.Fetcher
	Mounter  Mounter

	// Audience is the audience of the service-account token the pod logs
	// in with; the CSIDriver's tokenRequests must request it.
	Audience string
	// MaxVolumeBytes caps the size of one volume; a volume may ask for less
	// with the sizeLimit attribute.
	MaxVolumeBytes int64
	// RequestTimeout bounds the OpenBao part of a publish.
	RequestTimeout time.Duration

	// Cache keeps copies of what was read; nil makes a memory-only cache
	// without grace period.
	Cache *cache.Cache
	// Verifier verifies pod tokens offline. Without it every new pod logs
	// in to OpenBao and no cached copy is served to it.
	Verifier TokenVerifier
	// Breaker is the circuit breaker of the Bao client. With it, a publish
	// that has nothing cached waits up to OutageWait for OpenBao.
	Breaker *circuit.Breaker
	// Index keeps the volume index for restart recovery; nil keeps none.
	Index *state.Store
	// RefreshInterval is how often KV content is read again, unless the
	// volume sets refreshInterval. Zero means DefaultRefreshInterval.
	RefreshInterval time.Duration
	// OutageWait bounds the wait for OpenBao of a publish with nothing
	// cached. Zero means DefaultOutageWait; negative disables waiting.
	OutageWait time.Duration
	// GracePeriod is the cache's grace period, for messages only.
	GracePeriod time.Duration
	// Protector registers volumes with the runtime-protection monitor; nil
	// disables runtime protection.
	Protector Protector

	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Now        func() time.Time
}

// Driver serves the CSI Identity and Node services.
type Driver struct {
	csi.UnimplementedIdentityServer
	csi.UnimplementedNodeServer

	cfg       Config
	log       *slog.Logger
	metrics   *metrics
	volumes   *volumes
	scheduler *scheduler
	reads     singleflight.Group
	ready     atomic.Bool

	mu     sync.Mutex
	server *grpc.Server
}

var (
	_ csi.IdentityServer = (*Driver)(nil)
	_ csi.NodeServer     = (*Driver)(nil)
)

// New validates cfg and returns a Driver.
func New(cfg Config) (*Driver, error) {
	if cfg.Name == "" {
		cfg.Name = DefaultName
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 30 * time.Second
	}
	if cfg.RefreshInterval <= 0 {
		cfg.RefreshInterval = DefaultRefreshInterval
	}
	if cfg.OutageWait == 0 {
		cfg.OutageWait = DefaultOutageWait
	}
	if cfg.Cache == nil {
		cfg.Cache = cache.New(cache.Config{Now: cfg.Now, Logger: cfg.Logger})
	}

	var errs []error
	if cfg.NodeID == "" {
		errs = append(errs, errors.New("node id is empty: set it to the Kubernetes node name"))
	}
	if cfg.Bao == nil || cfg.Sessions == nil || cfg.Fetcher == nil {
		errs = append(errs, errors.New("OpenBao client, session cache and fetcher are required"))
	}
	if cfg.Mounter == nil {
		errs = append(errs, errors.New("mounter is required"))
	}
	if cfg.Audience == "" {
		errs = append(errs, errors.New("token audience is empty: set it to the audience of the CSIDriver's tokenRequests, such as \"openbao\""))
	}
	if cfg.MaxVolumeBytes <= 0 {
		errs = append(errs, fmt.Errorf("maximum volume size %d is not positive", cfg.MaxVolumeBytes))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("invalid driver config: %w", err)
	}

	return &Driver{
		cfg:       cfg,
		log:       cfg.Logger,
		metrics:   newMetrics(cfg.Registerer),
		volumes:   newVolumes(),
		scheduler: newScheduler(cfg.Now),
	}, nil
}

// Run serves CSI on endpoint (`unix:///path/csi.sock` or a plain path)
// until ctx is done. It removes a stale socket left by an earlier run.
func (d *Driver) Run(ctx context.Context, endpoint string) error {
	listener, err := Listen(endpoint)
	if err != nil {
		return err
	}
	return d.Serve(ctx, listener)
}

// Serve serves CSI on listener until ctx is done, then stops gracefully.
// It runs the background loop that renews leases and rotates content.
// Call Recover before Serve to take over the volumes of an earlier run.
func (d *Driver) Serve(ctx context.Context, listener net.Listener) error {
	loopCtx, stopLoop := context.WithCancel(ctx)
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		d.scheduler.run(loopCtx, d.background)
	}()
	defer func() {
		stopLoop()
		<-loopDone
	}()

	server := grpc.NewServer(grpc.UnaryInterceptor(d.logErrors))
	csi.RegisterIdentityServer(server, d)
	csi.RegisterNodeServer(server, d)

	d.mu.Lock()
	d.server = server
	d.mu.Unlock()

	done := make(chan struct{})
	go func() {
		select {
		case <-ctx.Done():
			d.ready.Store(false)
			server.GracefulStop()
		case <-done:
		}
	}()
	defer close(done)

	d.ready.Store(true)
	d.log.Info("serving CSI", "address", listener.Addr().String(), "driver", d.cfg.Name, "node_id", d.cfg.NodeID)
	if err := server.Serve(listener); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve CSI on %s: %w", listener.Addr(), err)
	}
	return nil
}

// Ready reports whether the driver serves requests.
func (d *Driver) Ready() bool { return d.ready.Load() }

// Listen opens the Unix socket of a CSI endpoint. It replaces a socket left
// by an earlier run, but never a socket another process serves or a file
// that is not a socket.
func Listen(endpoint string) (net.Listener, error) {
	path, err := EndpointPath(endpoint)
	if err != nil {
		return nil, err
	}
	listener, err := unixsock.Listen(path)
	if err != nil {
		return nil, fmt.Errorf("CSI endpoint: %w", err)
	}
	return listener, nil
}

// EndpointPath returns the socket path of a CSI endpoint given as
// unix:///path/csi.sock or as a plain path.
func EndpointPath(endpoint string) (string, error) {
	path := endpoint
	if u, err := url.Parse(endpoint); err == nil && u.Scheme != "" {
		if u.Scheme != "unix" {
			return "", fmt.Errorf("CSI endpoint %q: scheme %q is not supported: use unix:///path/to/csi.sock", endpoint, u.Scheme)
		}
		path = u.Path
	}
	if path == "" || !filepath.IsAbs(path) {
		return "", fmt.Errorf("CSI endpoint %q names no absolute socket path: use unix:///path/to/csi.sock", endpoint)
	}
	return path, nil
}

// logErrors logs each failed RPC once, here at the boundary, and makes
// sure no handler returns an error without a gRPC code.
func (d *Driver) logErrors(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	resp, err := handler(ctx, req)
	if err != nil {
		err = toStatus(err)
		d.log.Warn("CSI request failed", logKeyMethod, info.FullMethod, logKeyError, err.Error())
	}
	return resp, err
}
