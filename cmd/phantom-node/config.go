package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/phantom-sec/phantom/driver"
	"github.com/phantom-sec/phantom/pkg/bao"
	"github.com/phantom-sec/phantom/pkg/spec"
)

// Defaults of the outage flags.
const (
	// defaultGracePeriod covers an OpenBao restart, failover or an unseal by
	// an operator on call, and bounds how long a cached copy can outlive a
	// change of policy in OpenBao that this node has not seen.
	defaultGracePeriod = time.Hour
	defaultKeyName     = "phantom-node:sealed-cache"
)

const defaultEndpoint = "unix:///var/lib/kubelet/plugins/secrets.phantom.dev/csi.sock"

// config is the validated command line.
type config struct {
	endpoint        string
	nodeID          string
	openbaoAddr     string
	openbaoCAFile   string
	authMethod      string
	authMount       string
	audience        string
	kvMount         string
	kvPrefix        string
	metricsAddr     string
	logLevel        string
	logFormat       string
	stateDir        string
	tmpfsSizeLimit  int64
	registrationDir string

	gracePeriod     time.Duration
	refreshInterval time.Duration
	outageWait      time.Duration
	keyName         string
	jwksURL         string
	jwksFile        string
	jwksCAFile      string
	jwksTokenFile   string
	saIssuer        string

	runtimeProtection string
	kubeconfig        string

	logger *slog.Logger
}

// parseFlags parses args into a config and validates it, reporting every
// problem at once.
func parseFlags(args []string, getenv func(string) string) (*config, error) {
	c := &config{}
	var sizeLimit string
	fs := flag.NewFlagSet("phantom-node", flag.ContinueOnError)
	fs.StringVar(&c.endpoint, "endpoint", defaultEndpoint, "CSI endpoint: unix:// URL or path of the socket kubelet connects to")
	fs.StringVar(&c.nodeID, "node-id", getenv("NODE_NAME"), "node id reported to kubelet, the Kubernetes node name (default $NODE_NAME)")
	fs.StringVar(&c.openbaoAddr, "openbao-addr", "", "OpenBao URL, such as https://openbao.example.eu:8200 (required)")
	fs.StringVar(&c.openbaoCAFile, "openbao-ca-file", "", "PEM file with the CA certificates that verify OpenBao (default: system roots)")
	fs.StringVar(&c.authMethod, "auth-method", bao.AuthJWT, "OpenBao auth method the pods log in with: jwt or kubernetes")
	fs.StringVar(&c.authMount, "auth-mount", "", "mount path of the auth method in OpenBao (default: the method name)")
	fs.StringVar(&c.audience, "token-audience", "openbao", "audience of the service-account token the pods log in with; the CSIDriver's tokenRequests must request it")
	fs.StringVar(&c.kvMount, "kv-mount", "secret", "default KV v2 mount")
	fs.StringVar(&c.kvPrefix, "kv-prefix", "", "KV path prefix of volumes that name no secrets; they get <prefix>/<namespace>/<serviceAccount>/*")
	fs.StringVar(&c.metricsAddr, "metrics-addr", ":9810", "address of the HTTP server for /metrics, /healthz and /readyz; empty disables it")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.stateDir, "state-dir", "/run/phantom", "directory for the daemon's state; must be on a tmpfs")
	fs.StringVar(&sizeLimit, "tmpfs-size-limit", "4Mi", "maximum size of one volume's tmpfs, such as 4Mi")
	fs.StringVar(&c.runtimeProtection, "runtime-protection", "audit",
		"runtime protection of pod secrets by the eBPF monitor: off, audit (record node-level reads) or enforce (also block them); the namespace label phantom.dev/runtime-protection overrides audit and enforce")
	fs.StringVar(&c.kubeconfig, "kubeconfig", "", "kubeconfig for the API server, used for namespace labels and pod events (default: in-cluster config when running in a pod)")
	fs.StringVar(&c.registrationDir, "registration-dir", "/var/lib/kubelet/plugins_registry", "kubelet's plugin registration directory; empty disables self-registration")
	fs.DurationVar(&c.gracePeriod, "grace-period", defaultGracePeriod, "how long past its expiry a cached copy may still start a new pod while OpenBao is unreachable; 0 disables")
	fs.DurationVar(&c.refreshInterval, "refresh-interval", driver.DefaultRefreshInterval, "how often KV content is read again, unless a volume sets refreshInterval")
	fs.DurationVar(&c.outageWait, "outage-wait", driver.DefaultOutageWait, "how long a publish with nothing cached waits for OpenBao to come back before failing with Unavailable")
	fs.StringVar(&c.keyName, "keyring-key-name", defaultKeyName, "description of the sealed cache's key in root's kernel user keyring")
	fs.StringVar(&c.jwksURL, "service-account-jwks-url", "", "URL of the cluster's service-account public keys (default: the API server's /openid/v1/jwks when running in a pod)")
	fs.StringVar(&c.jwksFile, "service-account-jwks-file", "", "file with the cluster's service-account public keys as a JSON Web Key Set; overrides the URL")
	fs.StringVar(&c.jwksCAFile, "service-account-jwks-ca-file", "", "PEM CA bundle that verifies --service-account-jwks-url (default: system roots)")
	fs.StringVar(&c.jwksTokenFile, "service-account-jwks-token-file", "", "bearer token file sent with --service-account-jwks-url")
	fs.StringVar(&c.saIssuer, "service-account-issuer", "", "required issuer (iss) of service-account tokens verified offline; empty skips the check")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q: phantom-node takes flags only", fs.Args())
	}

	var errs []error
	if c.metricsAddr != "" {
		if _, port, err := net.SplitHostPort(c.metricsAddr); err != nil || port == "" {
			errs = append(errs, fmt.Errorf("--metrics-addr %q is not host:port, such as 127.0.0.1:9810 or :9810; empty disables the server", c.metricsAddr))
		}
	}
	if _, err := driver.EndpointPath(c.endpoint); err != nil {
		errs = append(errs, fmt.Errorf("--endpoint: %w", err))
	}
	if c.nodeID == "" {
		errs = append(errs, errors.New("--node-id is empty: set it or $NODE_NAME to the Kubernetes node name"))
	}
	if c.openbaoAddr == "" {
		errs = append(errs, errors.New("--openbao-addr is required: set it to the OpenBao URL"))
	} else if u, err := url.Parse(c.openbaoAddr); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		errs = append(errs, fmt.Errorf("--openbao-addr %q is not an http(s) URL such as https://openbao.example.eu:8200", c.openbaoAddr))
	}
	if c.authMethod != bao.AuthJWT && c.authMethod != bao.AuthKubernetes {
		errs = append(errs, fmt.Errorf("--auth-method %q is not supported: use jwt or kubernetes", c.authMethod))
	}
	if c.audience == "" {
		errs = append(errs, errors.New("--token-audience is empty: set it to the audience of the CSIDriver's tokenRequests"))
	}
	if c.openbaoCAFile != "" {
		if _, err := os.Stat(c.openbaoCAFile); err != nil {
			errs = append(errs, fmt.Errorf("--openbao-ca-file: %w", err))
		}
	}
	switch {
	case c.gracePeriod < 0:
		errs = append(errs, fmt.Errorf("--grace-period %s is negative: use 0 to disable serving expired copies", c.gracePeriod))
	case c.refreshInterval < 10*time.Second:
		errs = append(errs, fmt.Errorf("--refresh-interval %s is shorter than 10s", c.refreshInterval))
	case c.keyName == "":
		errs = append(errs, errors.New("--keyring-key-name is empty"))
	}
	if c.jwksURL != "" {
		if u, err := url.Parse(c.jwksURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			errs = append(errs, fmt.Errorf("--service-account-jwks-url %q is not an http(s) URL", c.jwksURL))
		}
	}
	switch c.runtimeProtection {
	case "off", "audit", "enforce":
	default:
		errs = append(errs, fmt.Errorf("--runtime-protection %q is not off, audit or enforce", c.runtimeProtection))
	}
	size, err := spec.ParseSize(sizeLimit)
	if err != nil {
		errs = append(errs, fmt.Errorf("--tmpfs-size-limit: %w", err))
	}
	c.tmpfsSizeLimit = size
	logger, err := newLogger(os.Stderr, c.logLevel, c.logFormat)
	if err != nil {
		errs = append(errs, err)
	}
	c.logger = logger

	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return c, nil
}

// kubeletEndpointPath is the CSI socket path given to kubelet at
// registration.
func (c *config) kubeletEndpointPath() string {
	return strings.TrimPrefix(c.endpoint, "unix://")
}

func newLogger(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("--log-level %q is not one of debug, info, warn, error", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format %q is not text or json", format)
	}
}
