package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"

	"github.com/phantom-sec/phantom/pkg/reconcile"
	"github.com/phantom-sec/phantom/pkg/webhook"
)

// Limits of the durations. The TokenRequest API rejects tokens shorter than
// 10 minutes. A certificate must live long enough that rotation at two
// thirds of its life leaves time for every API server to load the new CA.
const (
	minTokenExpiration = 10 * time.Minute
	minCertValidity    = time.Hour
	maxCertValidity    = 365 * 24 * time.Hour
)

// defaultReplicaSelector matches the webhook pods of the Helm chart with its
// default name. A release in a namespace shared with another release should
// pass --replica-selector with its app.kubernetes.io/instance label too.
const defaultReplicaSelector = "app.kubernetes.io/name=phantom,app.kubernetes.io/component=webhook"

// Config is everything the command line sets.
type Config struct {
	ListenAddr        string
	Namespace         string
	PodName           string
	ServiceName       string
	WebhookConfigName string
	DriverName        string
	TokenAudience     string
	TokenExpiration   time.Duration
	TokenInSecrets    bool
	LeaderElectionID  string
	CertValidity      time.Duration
	ReplicaSelector   string
	Kubeconfig        string
	LogLevel          string
	LogFormat         string
}

// parseFlags reads the flags. getenv supplies the defaults of --namespace
// and --pod-name, which the Deployment sets through the downward API.
func parseFlags(args []string, getenv func(string) string, output io.Writer) (Config, error) {
	var cfg Config
	fs := flag.NewFlagSet("phantom-webhook", flag.ContinueOnError)
	fs.SetOutput(output)
	fs.StringVar(&cfg.ListenAddr, "listen-addr", ":8443", "address of the HTTPS server (host:port)")
	fs.StringVar(&cfg.Namespace, "namespace", getenv("POD_NAMESPACE"), "Phantom's namespace: the webhook Service, the Lease and the replica pods (default: $POD_NAMESPACE)")
	fs.StringVar(&cfg.PodName, "pod-name", getenv("POD_NAME"), "name of this replica's pod, which receives the "+webhook.AnnotationWebhookCA+" annotation (default: $POD_NAME)")
	fs.StringVar(&cfg.ServiceName, "service-name", "phantom-webhook", "name of the webhook Service")
	fs.StringVar(&cfg.WebhookConfigName, "webhook-config-name", "phantom-webhook", "name of the MutatingWebhookConfiguration the reconciler keeps")
	fs.StringVar(&cfg.DriverName, "driver-name", webhook.DefaultDriverName, "CSI driver name of the injected volume and of the CSIDriver object")
	fs.StringVar(&cfg.TokenAudience, "token-audience", "openbao", "audience of the service-account token kubelet passes to the node plugin")
	fs.DurationVar(&cfg.TokenExpiration, "token-expiration", 10*time.Minute, "lifetime of that token (at least 10m)")
	fs.BoolVar(&cfg.TokenInSecrets, "token-in-secrets", true, "whether kubelet passes the service-account token in the NodePublishVolume secrets field instead of the volume context (Kubernetes 1.35 and later); set false on older clusters")
	fs.StringVar(&cfg.LeaderElectionID, "leader-election-id", "phantom-webhook", "name of the Lease that elects the reconciling replica")
	fs.DurationVar(&cfg.CertValidity, "cert-validity", 24*time.Hour, "lifetime of each in-memory serving certificate; a new one is made at two thirds of it (1h to 8760h)")
	fs.StringVar(&cfg.ReplicaSelector, "replica-selector", defaultReplicaSelector, "label selector of the webhook replica pods in --namespace whose CAs form the caBundle")
	fs.StringVar(&cfg.Kubeconfig, "kubeconfig", "", "path of a kubeconfig file; empty means the in-cluster configuration")
	fs.StringVar(&cfg.LogLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.StringVar(&cfg.LogFormat, "log-format", "text", "log format: text or json")

	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		// The flag package prints its own errors to output; print this one
		// there too, since main prints neither.
		err := fmt.Errorf("unexpected arguments %q: phantom-webhook takes only flags", fs.Args())
		fmt.Fprintf(output, "phantom-webhook: %v\n", err)
		return Config{}, err
	}
	return cfg, nil
}

// Validate returns every problem of the configuration at once.
func (c Config) Validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if _, _, err := net.SplitHostPort(c.ListenAddr); err != nil {
		add("--listen-addr %q is not host:port: use a value such as \":8443\"", c.ListenAddr)
	}
	if c.Namespace == "" {
		add("--namespace is empty: set it or the POD_NAMESPACE environment variable")
	} else if problems := validation.IsDNS1123Label(c.Namespace); len(problems) > 0 {
		add("--namespace %q is not a valid namespace name: %s", c.Namespace, strings.Join(problems, "; "))
	}
	if c.PodName == "" {
		add("--pod-name is empty: set it or the POD_NAME environment variable, because the replica publishes its CA on its own pod")
	}
	if problems := validation.IsDNS1035Label(c.ServiceName); len(problems) > 0 {
		add("--service-name %q is not a valid Service name: %s", c.ServiceName, strings.Join(problems, "; "))
	}
	for _, f := range []struct{ flag, value string }{
		{"--webhook-config-name", c.WebhookConfigName},
		{"--driver-name", c.DriverName},
		{"--leader-election-id", c.LeaderElectionID},
	} {
		if problems := validation.IsDNS1123Subdomain(f.value); len(problems) > 0 {
			add("%s %q is not a valid object name: %s", f.flag, f.value, strings.Join(problems, "; "))
		}
	}
	if c.TokenAudience == "" {
		add("--token-audience is empty: set the audience OpenBao's auth method expects, such as \"openbao\"")
	}
	if c.TokenExpiration < minTokenExpiration {
		add("--token-expiration %s is less than the minimum of %s", c.TokenExpiration, minTokenExpiration)
	}
	if c.CertValidity < minCertValidity || c.CertValidity > maxCertValidity {
		add("--cert-validity %s is outside %s to %s", c.CertValidity, minCertValidity, maxCertValidity)
	}
	if _, err := labels.Parse(c.ReplicaSelector); err != nil || c.ReplicaSelector == "" {
		add("--replica-selector %q is not a non-empty label selector: use a value such as \"app.kubernetes.io/component=webhook\"", c.ReplicaSelector)
	}
	if c.Kubeconfig != "" {
		if _, err := os.Stat(c.Kubeconfig); err != nil {
			add("--kubeconfig %q cannot be read: %v", c.Kubeconfig, err)
		}
	}
	if _, err := parseLevel(c.LogLevel); err != nil {
		errs = append(errs, err)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		add("--log-format %q is not supported: use text or json", c.LogFormat)
	}
	return errors.Join(errs...)
}

// objects returns the names of the objects the reconciler keeps.
func (c Config) objects() reconcile.ObjectConfig {
	return reconcile.ObjectConfig{
		WebhookConfigName: c.WebhookConfigName,
		ServiceName:       c.ServiceName,
		Namespace:         c.Namespace,
		DriverName:        c.DriverName,
		TokenAudience:     c.TokenAudience,
		TokenExpiration:   c.TokenExpiration,
		TokenInSecrets:    c.TokenInSecrets,
	}
}

func parseLevel(level string) (slog.Level, error) {
	switch level {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("--log-level %q is not supported: use debug, info, warn or error", level)
}

// newLogger returns the logger that the flags select. cfg must be valid.
func newLogger(cfg Config, w io.Writer) *slog.Logger {
	level, _ := parseLevel(cfg.LogLevel)
	opts := &slog.HandlerOptions{Level: level}
	if cfg.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
