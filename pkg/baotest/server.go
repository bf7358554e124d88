// Package baotest is an in-process stand-in for the OpenBao HTTP API, for
// tests that cannot run the real server.
//
// It implements the parts Phantom uses, with OpenBao 2.6's status codes,
// JSON shapes and error strings. That covers JWT and Kubernetes auth (with
// real signature and claim checks), ACL policies with globs, segment
// wildcards and identity templating, and tokens with TTLs. It also covers
// KV version 2, leases, and the database and PKI secrets engines. Fault injection (down, latency, injected
// failures, sealed) and per-operation counters let tests assert how a client
// behaves when OpenBao misbehaves. An injectable clock lets tests move time.
//
// The provisioning helpers (EnableJWTAuth, WriteJWTRole, EnableKV2, ...) and
// Issuer take an *api.Client, so the same test code drives this server or a
// real OpenBao.
//
// All state lives in memory and every method is safe for concurrent use.
package baotest

import (
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/openbao/openbao/api/v2"
)

// Version is the OpenBao version the server reports. The build suffix shows
// a reader of sys/health that the test server sent the response.
const Version = "2.6.2+baotest"

// Options configure a Server.
type Options struct {
	// TLS serves HTTPS with a certificate from a CA generated at start; see
	// Server.CACertPEM.
	TLS bool
	// Logger receives one debug line per request (method, path, operation
	// and, on failure, the status) and the listener's errors. Tokens, bodies
	// and error messages are never logged. Nil discards.
	Logger *slog.Logger
	// Now is the server's clock for token, lease and JWT times. Nil means
	// time.Now. See Clock for a settable one.
	Now func() time.Time
}

// Server is a running test server. Create it with Start or New.
type Server struct {
	log       *slog.Logger
	now       func() time.Time
	tlsConfig *tls.Config
	caPEM     []byte
	rootToken string
	cluster   clusterInfo

	faults faultState

	netMu    sync.Mutex // guards the fields below it
	addr     string     // fixed after the first listen, so restarts reuse the port
	httpSrv  *http.Server
	down     bool
	closed   bool
	serveErr chan error

	mu       sync.Mutex // guards all API state below
	sealed   bool
	mounts   map[string]*mount // secrets engines by path ("secret/")
	auths    map[string]*mount // auth methods by path below auth/ ("jwt/")
	policies map[string]*policy
	tokens   map[string]*token // by token ID
	byAcc    map[string]*token // by accessor
	entities map[string]*entity
	leases   map[string]*lease
}

type clusterInfo struct {
	name, id string
}

// Start starts a server listening on 127.0.0.1 on a free port.
func Start(opts Options) (*Server, error) {
	s := &Server{
		log:       opts.Logger,
		now:       opts.Now,
		rootToken: newTokenID("s."),
		cluster:   clusterInfo{name: "vault-cluster-" + randomHex(4), id: uuid.NewString()},
		mounts:    map[string]*mount{},
		auths:     map[string]*mount{},
		policies:  map[string]*policy{},
		tokens:    map[string]*token{},
		byAcc:     map[string]*token{},
		entities:  map[string]*entity{},
		leases:    map[string]*lease{},
	}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	s.faults.init()

	if opts.TLS {
		cfg, caPEM, err := newServerTLS()
		if err != nil {
			return nil, fmt.Errorf("start test server: %w", err)
		}
		s.tlsConfig, s.caPEM = cfg, caPEM
	}

	s.initState()
	if err := s.listen("127.0.0.1:0"); err != nil {
		return nil, fmt.Errorf("start test server: %w", err)
	}
	return s, nil
}

// New starts a server for t and closes it when t ends. It fails t if the
// server cannot start.
func New(t testing.TB) *Server {
	t.Helper()
	return NewWithOptions(t, Options{})
}

// NewWithOptions is New with options.
func NewWithOptions(t testing.TB, opts Options) *Server {
	t.Helper()
	s, err := Start(opts)
	if err != nil {
		t.Fatalf("baotest: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// initState creates the built-in mounts, the default policy and the root
// token, as a freshly initialized OpenBao has them.
func (s *Server) initState() {
	s.mu.Lock()
	defer s.mu.Unlock()

	s.auths["token/"] = newMount("token/", "token", "auth_token_", "token based credentials", tokenBackend{s: s})
	s.mounts["cubbyhole/"] = newMount("cubbyhole/", "cubbyhole", "cubbyhole_", "per-token private secret storage", nilBackend{})
	s.mounts["identity/"] = newMount("identity/", "identity", "identity_", "identity store", nilBackend{})
	s.mounts["sys/"] = newMount("sys/", "system", "system_", "system endpoints used for control, policy and debugging", nilBackend{})

	def, err := parsePolicy("default", defaultPolicyHCL)
	if err != nil {
		panic(fmt.Sprintf("baotest: built-in default policy does not parse: %v", err))
	}
	s.policies["default"] = def

	root := &token{
		id:          s.rootToken,
		accessor:    newAccessor(),
		policies:    []string{"root"},
		path:        "auth/token/root",
		displayName: "root",
		tokenType:   "service",
		issued:      s.now(),
	}
	s.storeTokenLocked(root)
}

// URL returns the server's base address, http(s)://127.0.0.1:port.
func (s *Server) URL() string {
	s.netMu.Lock()
	defer s.netMu.Unlock()
	scheme := "http"
	if s.tlsConfig != nil {
		scheme = "https"
	}
	return scheme + "://" + s.addr
}

// RootToken returns the token that bypasses all policies.
func (s *Server) RootToken() string {
	return s.rootToken
}

// CACertPEM returns the PEM certificate of the CA that signed the server's
// certificate, or nil without TLS.
func (s *Server) CACertPEM() []byte {
	if s.caPEM == nil {
		return nil
	}
	return append([]byte(nil), s.caPEM...)
}

// NewClient returns an OpenBao API client for this server that sends token
// (none when empty). It trusts the server's CA and never retries, so
// injected failures reach the caller unchanged. It ignores BAO_* and VAULT_*
// environment variables.
func (s *Server) NewClient(token string) (*api.Client, error) {
	cfg := api.DefaultConfig()
	if cfg.Error != nil {
		return nil, fmt.Errorf("configure OpenBao client: %w", cfg.Error)
	}
	cfg.Address = s.URL()
	cfg.MaxRetries = 0
	if s.caPEM != nil {
		if err := cfg.ConfigureTLS(&api.TLSConfig{CACertBytes: s.caPEM}); err != nil {
			return nil, fmt.Errorf("configure OpenBao client TLS: %w", err)
		}
	}

	c, err := api.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("create OpenBao client: %w", err)
	}
	c.ClearNamespace()
	if token == "" {
		c.ClearToken()
	} else {
		c.SetToken(token)
	}
	return c, nil
}

// Close stops the server. Later calls return nil.
func (s *Server) Close() error {
	s.netMu.Lock()
	defer s.netMu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.down || s.httpSrv == nil {
		return nil
	}
	return s.stopLocked()
}

// listen starts serving on addr and records the bound address. Callers
// hold netMu or are Start.
func (s *Server) listen(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	s.addr = ln.Addr().String()
	if s.tlsConfig != nil {
		ln = tls.NewListener(ln, s.tlsConfig)
	}

	srv := &http.Server{
		Handler:           s,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	done := make(chan error, 1)
	go func() {
		err := srv.Serve(ln)
		if errors.Is(err, http.ErrServerClosed) {
			err = nil
		}
		done <- err
	}()
	s.httpSrv, s.serveErr = srv, done
	return nil
}

// stopLocked closes the listener and every open connection, so clients see
// refused or reset connections as with a crashed server. Callers hold netMu.
func (s *Server) stopLocked() error {
	err := s.httpSrv.Close()
	if serveErr := <-s.serveErr; serveErr != nil && err == nil {
		err = serveErr
	}
	s.httpSrv = nil
	if err != nil {
		return fmt.Errorf("stop test server: %w", err)
	}
	return nil
}
