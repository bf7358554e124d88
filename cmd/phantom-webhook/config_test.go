package main

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/phantom-sec/phantom/pkg/reconcile"
)

func env(values map[string]string) func(string) string {
	return func(key string) string { return values[key] }
}

func TestParseFlagsDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := parseFlags(nil, env(map[string]string{"POD_NAMESPACE": "phantom-system", "POD_NAME": "phantom-webhook-7d9f8-abcde"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		ListenAddr:        ":8443",
		Namespace:         "phantom-system",
		PodName:           "phantom-webhook-7d9f8-abcde",
		ServiceName:       "phantom-webhook",
		WebhookConfigName: "phantom-webhook",
		DriverName:        "secrets.phantom.dev",
		TokenAudience:     "openbao",
		TokenExpiration:   10 * time.Minute,
		TokenInSecrets:    true,
		LeaderElectionID:  "phantom-webhook",
		CertValidity:      24 * time.Hour,
		ReplicaSelector:   "app.kubernetes.io/name=phantom,app.kubernetes.io/component=webhook",
		LogLevel:          "info",
		LogFormat:         "text",
	}
	if diff := cmp.Diff(want, cfg); diff != "" {
		t.Errorf("defaults (-want +got):\n%s", diff)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("Validate() of the defaults = %v", err)
	}
}

func TestParseFlagsOverrides(t *testing.T) {
	t.Parallel()
	args := []string{
		"--listen-addr=127.0.0.1:9443", "--namespace=sec", "--pod-name=wh-0", "--service-name=wh",
		"--webhook-config-name=wh-config", "--driver-name=secrets.example.com", "--token-audience=bao",
		"--token-expiration=1h", "--token-in-secrets=false", "--leader-election-id=wh-lease", "--cert-validity=12h",
		"--replica-selector=app=wh", "--log-level=debug", "--log-format=json",
	}
	cfg, err := parseFlags(args, env(map[string]string{"POD_NAMESPACE": "ignored"}), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		ListenAddr: "127.0.0.1:9443", Namespace: "sec", PodName: "wh-0", ServiceName: "wh",
		WebhookConfigName: "wh-config", DriverName: "secrets.example.com", TokenAudience: "bao",
		TokenExpiration: time.Hour, TokenInSecrets: false, LeaderElectionID: "wh-lease", CertValidity: 12 * time.Hour,
		ReplicaSelector: "app=wh", LogLevel: "debug", LogFormat: "json",
	}
	if diff := cmp.Diff(want, cfg); diff != "" {
		t.Errorf("config (-want +got):\n%s", diff)
	}
	wantObjects := reconcile.ObjectConfig{
		WebhookConfigName: "wh-config", ServiceName: "wh", Namespace: "sec", DriverName: "secrets.example.com",
		TokenAudience: "bao", TokenExpiration: time.Hour, TokenInSecrets: false,
	}
	if diff := cmp.Diff(wantObjects, cfg.objects()); diff != "" {
		t.Errorf("reconciler objects (-want +got):\n%s", diff)
	}
}

func TestParseFlagsRejectsArguments(t *testing.T) {
	t.Parallel()
	if _, err := parseFlags([]string{"extra"}, env(nil), io.Discard); err == nil {
		t.Error("parseFlags accepted a positional argument")
	}
	if _, err := parseFlags([]string{"--no-such-flag"}, env(nil), io.Discard); err == nil {
		t.Error("parseFlags accepted an unknown flag")
	}
}

func TestValidateListsEveryProblem(t *testing.T) {
	t.Parallel()
	cfg := Config{
		ListenAddr:        "8443",
		ServiceName:       "Web_Hook",
		WebhookConfigName: "",
		DriverName:        "secrets..phantom",
		LeaderElectionID:  "lease",
		TokenExpiration:   5 * time.Minute,
		CertValidity:      30 * time.Minute,
		ReplicaSelector:   "app in (",
		Kubeconfig:        "/nonexistent/kubeconfig",
		LogLevel:          "verbose",
		LogFormat:         "xml",
	}
	err := cfg.Validate()
	if err == nil {
		t.Fatal("Validate() = nil for an invalid configuration")
	}
	for _, want := range []string{
		`--listen-addr "8443"`, "--namespace is empty", "--pod-name is empty", `--service-name "Web_Hook"`,
		`--webhook-config-name ""`, `--driver-name "secrets..phantom"`, "--token-audience is empty",
		"--token-expiration 5m0s", "--cert-validity 30m0s", `--replica-selector "app in ("`,
		`--kubeconfig "/nonexistent/kubeconfig"`, `--log-level "verbose"`, `--log-format "xml"`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s:\n%v", want, err)
		}
	}
}
