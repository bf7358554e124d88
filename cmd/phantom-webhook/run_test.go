package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/clock"
)

// TestRunServesAndReconciles runs the whole binary against a fake API
// server: the leader creates the webhook configuration with this
// replica's CA, /readyz turns ready, /mutate patches a pod over TLS that
// trusts only the caBundle, and cancelling shuts everything down and
// releases the Lease.
func TestRunServesAndReconciles(t *testing.T) {
	t.Parallel()
	const namespace, podName = "phantom-system", "phantom-webhook-0"
	client := fake.NewClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a", Labels: map[string]string{"phantom.dev/inject": "enabled"}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: namespace}},
		&corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: podName, Namespace: namespace, Labels: map[string]string{"app.kubernetes.io/name": "phantom", "app.kubernetes.io/component": "webhook"}},
			Status:     corev1.PodStatus{Phase: corev1.PodRunning},
		},
	)
	cfg, err := parseFlags([]string{"--namespace=" + namespace, "--pod-name=" + podName}, os.Getenv, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, cfg, deps{Client: client, Logger: slog.New(slog.DiscardHandler), Clock: clock.RealClock{}, Listener: listener})
	}()

	// The leader writes the configuration with this replica's CA.
	var pool *x509.CertPool
	waitFor(t, "the caBundle trusts the replica", func() bool {
		cfg, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, "phantom-webhook", metav1.GetOptions{})
		if err != nil || len(cfg.Webhooks) != 2 || len(cfg.Webhooks[0].ClientConfig.CABundle) == 0 {
			return false
		}
		pool = x509.NewCertPool()
		return pool.AppendCertsFromPEM(cfg.Webhooks[0].ClientConfig.CABundle)
	})
	httpClient := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{
		RootCAs: pool, ServerName: "phantom-webhook.phantom-system.svc", MinVersion: tls.VersionTLS12,
	}}}
	base := "https://" + listener.Addr().String()
	waitFor(t, "/readyz reports ready", func() bool {
		resp, err := httpClient.Get(base + "/readyz")
		if err != nil {
			return false
		}
		_ = resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	if _, err := client.StorageV1().CSIDrivers().Get(ctx, "secrets.phantom.dev", metav1.GetOptions{}); err != nil {
		t.Errorf("CSIDriver: %v", err)
	}

	checkMutate(t, httpClient, base)
	checkMetrics(t, httpClient, base)

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run() = %v, want nil after cancel", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("run did not return within 15s of cancel")
	}
	lease, err := client.CoordinationV1().Leases(namespace).Get(context.Background(), "phantom-webhook", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if holder := lease.Spec.HolderIdentity; holder != nil && *holder != "" {
		t.Errorf("Lease holder after shutdown = %q, want it released", *holder)
	}
}

func checkMutate(t *testing.T, client *http.Client, base string) {
	t.Helper()
	body, err := os.ReadFile(filepath.Join("..", "..", "pkg", "webhook", "testdata", "admission", "namespace-enabled.json"))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Post(base+"/mutate", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	review := &admissionv1.AdmissionReview{}
	if err := json.NewDecoder(resp.Body).Decode(review); err != nil {
		t.Fatal(err)
	}
	if review.Response == nil || !review.Response.Allowed || len(review.Response.Patch) == 0 {
		t.Errorf("response = %+v, want an allowed response with a patch", review.Response)
	}
}

func checkMetrics(t *testing.T, client *http.Client, base string) {
	t.Helper()
	resp, err := client.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	text, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`phantom_webhook_admissions_total{result="mutated"} 1`,
		`phantom_webhook_restores_total{object="csidriver"} 0`,
		"phantom_webhook_mutation_duration_seconds_bucket",
		"go_goroutines",
	} {
		if !strings.Contains(string(text), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
