package driver

import (
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/phantom-sec/phantom/pkg/bao"
	"github.com/phantom-sec/phantom/pkg/baotest"
	"github.com/phantom-sec/phantom/pkg/fetch"
	"github.com/phantom-sec/phantom/pkg/tmpfs"
)

// TestPublishKubernetesAuth logs in through the Kubernetes auth method
// instead of JWT.
func TestPublishKubernetesAuth(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	must(t, baotest.EnableKubernetesAuth(ctx, h.admin, "kubernetes", baotest.KubernetesConfig{
		Host: "https://kubernetes.default.svc", PEMKeys: [][]byte{h.issuer.PublicKeyPEM()}, Issuer: testIssuer,
	}))
	must(t, baotest.WriteKubernetesRole(ctx, h.admin, "kubernetes", "payments-api", baotest.KubernetesRole{
		ServiceAccountNames: []string{"api"}, ServiceAccountNamespaces: []string{"payments"},
		Audience: testAudience, TokenPolicies: []string{"payments-api"}, TokenTTL: 15 * time.Minute,
	}))

	// A second driver on the same server, configured for Kubernetes auth.
	client, err := bao.New(bao.Config{Address: h.bao.URL(), AuthMethod: bao.AuthKubernetes})
	must(t, err)
	k8s := &harness{t: t, bao: h.bao, admin: h.admin, issuer: h.issuer, logs: &lockedBuffer{}, reg: prometheus.NewRegistry(), root: t.TempDir()}
	k8s.startWith(Config{
		Version: "test", NodeID: testNode, Bao: client, Sessions: bao.NewSessions(client, nil),
		Fetcher: fetch.New(fetch.Config{}), Mounter: tmpfs.NewMounter(slog.New(slog.DiscardHandler)),
		Audience: testAudience, MaxVolumeBytes: 1 << 20,
	})
	h.bao.ResetCounts()

	req := k8s.request(newPod("payments", "api"), paymentsSecrets)
	must(t, k8s.publish(req))

	if got := readFile(t, filepath.Join(req.TargetPath, "db-password")); got != "s3cret-one" {
		t.Errorf("db-password = %q, want s3cret-one", got)
	}
	if n := h.bao.Count(baotest.OpLogin); n != 1 {
		t.Errorf("logins = %d, want 1 through auth/kubernetes", n)
	}
}

func TestPublishMetrics(t *testing.T) {
	h := newHarness(t)
	must(t, h.publish(h.request(newPod("payments", "api"), paymentsSecrets)))
	_ = h.publish(h.request(newPod("payments", "api"), "- path: billing/db\n  field: password"))

	want := `
# HELP phantom_node_publish_total NodePublishVolume calls by result (ok, error) and failure reason.
# TYPE phantom_node_publish_total counter
phantom_node_publish_total{reason="none",result="ok"} 1
phantom_node_publish_total{reason="permission_denied",result="error"} 1
# HELP phantom_node_volumes_mounted Phantom volumes currently mounted on this node.
# TYPE phantom_node_volumes_mounted gauge
phantom_node_volumes_mounted 1
`
	if err := testutil.GatherAndCompare(h.reg, strings.NewReader(want), "phantom_node_publish_total", "phantom_node_volumes_mounted"); err != nil {
		t.Error(err)
	}
	if n := testutil.CollectAndCount(h.reg, "phantom_bao_requests_total"); n < 2 {
		t.Errorf("phantom_bao_requests_total has %d series, want login and read at least", n)
	}
}
