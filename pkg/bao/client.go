// Package bao is Phantom's OpenBao client. It logs in as a pod with the pod's
// service-account token, reads KV v2 and dynamic secrets with the resulting
// token, and manages leases. It never uses an identity of its own to read
// application secrets.
//
// All methods are safe for concurrent use. Errors wrap one of the sentinels
// in errors.go and never carry tokens or secret values.
package bao

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/openbao/openbao/api/v2"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/phantom-sec/phantom/pkg/circuit"
	"github.com/phantom-sec/phantom/pkg/secret"
)

// Authentication methods.
const (
	AuthJWT        = "jwt"
	AuthKubernetes = "kubernetes"
)

// Operations, the `op` label of the request metric.
const (
	opLogin  = "login"
	opRead   = "read"
	opList   = "list"
	opWrite  = "write"
	opRenew  = "renew"
	opRevoke = "revoke"
	opHealth = "health"
	// opRenewToken renews the session's own token (renew-self).
	opRenewToken = "token_renew"
)

// Config configures a Client.
type Config struct {
	// Address is the OpenBao URL, such as https://openbao.example.eu:8200.
	Address string
	// CAFile is a PEM bundle that verifies OpenBao's certificate; empty
	// uses the system roots.
	CAFile string
	// CAPEM is used instead of CAFile when set (tests).
	CAPEM []byte
	// AuthMethod is AuthJWT or AuthKubernetes.
	AuthMethod string
	// AuthMount is the path of the auth method, such as "jwt".
	AuthMount string
	// Timeout bounds each HTTP request.
	Timeout time.Duration
	// Logger receives debug lines; nil discards.
	Logger *slog.Logger
	// Registerer receives the client's metrics; nil skips registration.
	Registerer prometheus.Registerer
	// Breaker, when set, guards every request except Health and Probe:
	// requests fail at once with ErrUnavailable while it is open, and the
	// outcome of each request is recorded in it. Give it Client.Probe as
	// its probe.
	Breaker *circuit.Breaker
}

// Client talks to one OpenBao server. It holds no token of its own.
type Client struct {
	base    *api.Client
	method  string
	mount   string
	logger  *slog.Logger
	metrics *metrics
	breaker *circuit.Breaker
}

// Login is the result of a successful login.
type Login struct {
	Token     secret.String
	Accessor  string
	Policies  []string
	TTL       time.Duration
	Renewable bool
}

// New validates cfg and returns a Client.
func New(cfg Config) (*Client, error) {
	if cfg.AuthMethod != AuthJWT && cfg.AuthMethod != AuthKubernetes {
		return nil, fmt.Errorf("auth method %q is not supported: use %q or %q", cfg.AuthMethod, AuthJWT, AuthKubernetes)
	}
	if cfg.AuthMount == "" {
		cfg.AuthMount = cfg.AuthMethod
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}

	apiConfig, err := newAPIConfig(cfg)
	if err != nil {
		return nil, err
	}
	base, err := api.NewClient(apiConfig)
	if err != nil {
		return nil, fmt.Errorf("create OpenBao client for %s: %w", cfg.Address, err)
	}
	// api.NewClient reads BAO_TOKEN and VAULT_TOKEN from the environment.
	// Phantom must never read with an identity of its own, so drop it.
	base.ClearToken()
	base.SetCloneToken(false)

	return &Client{
		base:    base,
		method:  cfg.AuthMethod,
		mount:   strings.Trim(cfg.AuthMount, "/"),
		logger:  cfg.Logger,
		metrics: newMetrics(cfg.Registerer),
		breaker: cfg.Breaker,
	}, nil
}

func newAPIConfig(cfg Config) (*api.Config, error) {
	if cfg.Address == "" {
		return nil, errors.New("OpenBao address is empty: set it to a URL such as https://openbao.example.eu:8200")
	}

	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.MaxIdleConnsPerHost = 64
	transport.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
	caPEM := cfg.CAPEM
	if len(caPEM) == 0 && cfg.CAFile != "" {
		var err error
		if caPEM, err = os.ReadFile(cfg.CAFile); err != nil {
			return nil, fmt.Errorf("read OpenBao CA file: %w", err)
		}
	}
	if len(caPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(caPEM) {
			return nil, fmt.Errorf("OpenBao CA file %q contains no PEM certificate", cfg.CAFile)
		}
		transport.TLSClientConfig.RootCAs = pool
	}

	apiConfig := api.DefaultConfig()
	if apiConfig.Error != nil {
		return nil, fmt.Errorf("read OpenBao client defaults: %w", apiConfig.Error)
	}
	apiConfig.Address = cfg.Address
	apiConfig.HttpClient = &http.Client{Transport: transport, Timeout: cfg.Timeout}
	apiConfig.Timeout = cfg.Timeout
	// Retries belong to the caller, which can tell whether a pod is waiting.
	apiConfig.MaxRetries = 0
	return apiConfig, nil
}

// Login exchanges a pod's service-account token for an OpenBao token of
// the given role.
func (c *Client) Login(ctx context.Context, role string, jwt secret.String) (*Login, error) {
	path := "auth/" + c.mount + "/login"
	body := map[string]any{"role": role, "jwt": jwt.Reveal()}

	var s *api.Secret
	err := c.do(ctx, opLogin, func(ctx context.Context) error {
		var err error
		s, err = c.base.Logical().WriteWithContext(ctx, path, body)
		return err
	})
	c.metrics.logins.WithLabelValues(resultOf(err)).Inc()
	if errors.Is(err, ErrInvalidRequest) {
		// OpenBao returns 400 for every rejected login: an unknown role, a
		// token with the wrong audience, expired or failing bound claims.
		return nil, fmt.Errorf("log in to OpenBao at %s with role %q: %w: OpenBao rejected the pod's token (%w): check the role and its bound claims",
			path, role, ErrPermissionDenied, err)
	}
	if err != nil {
		return nil, fmt.Errorf("log in to OpenBao at %s with role %q: %w", path, role, err)
	}
	if s == nil || s.Auth == nil || s.Auth.ClientToken == "" {
		return nil, fmt.Errorf("log in to OpenBao at %s with role %q: %w: response has no token", path, role, ErrUnavailable)
	}

	return &Login{
		Token:     secret.String(s.Auth.ClientToken),
		Accessor:  s.Auth.Accessor,
		Policies:  s.Auth.Policies,
		TTL:       time.Duration(s.Auth.LeaseDuration) * time.Second,
		Renewable: s.Auth.Renewable,
	}, nil
}

// Health reports whether OpenBao is reachable, initialized and unsealed.
// It bypasses the breaker.
func (c *Client) Health(ctx context.Context) error {
	return c.call(ctx, opHealth, c.health)
}

// Probe is the circuit breaker's probe: a sys/health request, which
// OpenBao serves without authentication or storage access. When the
// connection cannot be made at all, so nothing reached OpenBao, the error
// also wraps circuit.ErrUnreachable.
func (c *Client) Probe(ctx context.Context) error {
	var dialFailed bool
	err := c.call(ctx, opHealth, func(ctx context.Context) error {
		err := c.health(ctx)
		var opErr *net.OpError
		dialFailed = errors.As(err, &opErr) && opErr.Op == "dial"
		return err
	})
	if dialFailed {
		return fmt.Errorf("%w: %w", circuit.ErrUnreachable, err)
	}
	return err
}

func (c *Client) health(ctx context.Context) error {
	h, err := c.base.Sys().HealthWithContext(ctx)
	if err != nil {
		return err
	}
	if h.Sealed {
		return fmt.Errorf("%w: OpenBao is sealed", ErrUnavailable)
	}
	if !h.Initialized {
		return fmt.Errorf("%w: OpenBao is not initialized", ErrUnavailable)
	}
	return nil
}

// AuthMount returns the mount path of the auth method.
func (c *Client) AuthMount() string { return c.mount }

// Address returns the OpenBao address.
func (c *Client) Address() string { return c.base.Address() }

// do runs one request through the breaker: it fails at once while the
// breaker is open, and records whether OpenBao served the request.
func (c *Client) do(ctx context.Context, op string, request func(context.Context) error) error {
	if c.breaker != nil {
		if err := c.breaker.Allow(); err != nil {
			c.metrics.requests.WithLabelValues(op, "circuit_open").Inc()
			return fmt.Errorf("%w: %w", ErrUnavailable, err)
		}
	}
	err := c.call(ctx, op, request)
	// A request the caller abandoned says nothing about OpenBao.
	if c.breaker != nil && ctx.Err() == nil {
		c.breaker.Record(errors.Is(err, ErrUnavailable), err)
	}
	return err
}

// call runs one request, classifies its error and records the metric.
func (c *Client) call(ctx context.Context, op string, request func(context.Context) error) error {
	start := time.Now()
	err := request(ctx)
	if err != nil && !isClassified(err) {
		err = classify(err)
	}
	c.metrics.observe(op, resultOf(err), time.Since(start))
	return err
}

func isClassified(err error) bool {
	return errors.Is(err, ErrPermissionDenied) || errors.Is(err, ErrNotFound) ||
		errors.Is(err, ErrUnavailable) || errors.Is(err, ErrInvalidRequest)
}
