package driver

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/google/uuid"
	"github.com/openbao/openbao/api/v2"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/phantom-sec/phantom/pkg/bao"
	"github.com/phantom-sec/phantom/pkg/baotest"
	"github.com/phantom-sec/phantom/pkg/fetch"
	"github.com/phantom-sec/phantom/pkg/spec"
	"github.com/phantom-sec/phantom/pkg/tmpfs"
)

const (
	testAudience = "openbao"
	testIssuer   = "https://kubernetes.default.svc.cluster.local"
	testNode     = "node-a"
)

// harness runs the real driver on a Unix socket against the OpenBao test
// server, with two tenants: payments/api and billing/worker. Each tenant's
// role may read only its own namespace's KV paths.
type harness struct {
	t       testing.TB
	bao     *baotest.Server
	admin   *api.Client
	issuer  *baotest.Issuer
	client  csi.NodeClient
	ident   csi.IdentityClient
	logs    *lockedBuffer
	reg     *prometheus.Registry
	root    string
	mounter *tmpfs.Mounter
}

type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount tmpfs")
	}
}

func newHarness(t testing.TB) *harness {
	t.Helper()
	requireRoot(t)
	ctx := context.Background()

	h := &harness{t: t, bao: baotest.New(t), logs: &lockedBuffer{}, reg: prometheus.NewRegistry(), root: t.TempDir()}
	cfg := api.DefaultConfig()
	cfg.Address = h.bao.URL()
	admin, err := api.NewClient(cfg)
	if err != nil {
		t.Fatalf("admin client: %v", err)
	}
	admin.SetToken(h.bao.RootToken())
	h.admin = admin

	if h.issuer, err = baotest.NewIssuer(testIssuer); err != nil {
		t.Fatalf("NewIssuer: %v", err)
	}
	must(t, baotest.EnableKV2(ctx, admin, "secret"))
	must(t, baotest.EnableJWTAuth(ctx, admin, "jwt", testIssuer, h.issuer.PublicKeyPEM()))
	for _, tenant := range []struct{ namespace, sa string }{{"payments", "api"}, {"billing", "worker"}} {
		role := tenant.namespace + "-" + tenant.sa
		must(t, baotest.WritePolicy(ctx, admin, role, fmt.Sprintf(`
path "secret/data/%[1]s/*" { capabilities = ["read"] }
path "secret/metadata/%[1]s/*" { capabilities = ["list"] }
path "database/creds/%[1]s" { capabilities = ["read"] }
path "sys/leases/revoke/database/creds/%[1]s/*" { capabilities = ["update"] }
`, tenant.namespace)))
		must(t, baotest.WriteJWTRole(ctx, admin, "jwt", role, baotest.JWTRole{
			BoundAudiences: []string{testAudience},
			BoundClaims:    map[string]any{"/kubernetes.io/namespace": tenant.namespace},
			UserClaim:      "sub",
			TokenPolicies:  []string{role},
			TokenTTL:       15 * time.Minute,
		}))
	}
	h.writeKV("payments/db", map[string]any{"username": "app", "password": "s3cret-one"})
	h.writeKV("billing/db", map[string]any{"password": "billing-only"})

	h.start(8 << 20)
	return h
}

// start runs a driver whose volumes may hold up to maxBytes.
func (h *harness) start(maxBytes int64) {
	t := h.t
	logger := slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	client, err := bao.New(bao.Config{Address: h.bao.URL(), AuthMethod: bao.AuthJWT, Logger: logger, Registerer: h.reg})
	if err != nil {
		t.Fatalf("bao.New: %v", err)
	}
	h.mounter = tmpfs.NewMounter(logger)
	d, err := New(Config{
		Version: "test", NodeID: testNode,
		Bao: client, Sessions: bao.NewSessions(client, nil), Fetcher: fetch.New(fetch.Config{}),
		Mounter: h.mounter, Audience: testAudience, MaxVolumeBytes: maxBytes,
		RequestTimeout: 5 * time.Second, Logger: logger, Registerer: h.reg,
	})
	if err != nil {
		t.Fatalf("New: %v", err)
	}

	socket := filepath.Join(t.TempDir(), "csi.sock")
	listener, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Serve(ctx, listener) }()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	t.Cleanup(func() {
		conn.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve() = %v", err)
		}
		h.unmountAll()
	})
	h.client = csi.NewNodeClient(conn)
	h.ident = csi.NewIdentityClient(conn)
}

// unmountAll removes every Phantom mount under the test's root, so a
// failing test never leaves mounts behind.
func (h *harness) unmountAll() {
	targets, err := h.mounter.List()
	if err != nil {
		h.t.Errorf("list mounts: %v", err)
		return
	}
	for _, target := range targets {
		if strings.HasPrefix(target, h.root) {
			if err := h.mounter.Unmount(target); err != nil {
				h.t.Errorf("clean up mount %s: %v", target, err)
			}
		}
	}
}

func (h *harness) writeKV(path string, data map[string]any) {
	h.t.Helper()
	if _, err := h.admin.KVv2("secret").Put(context.Background(), path, data); err != nil {
		h.t.Fatalf("write secret/%s: %v", path, err)
	}
}

// pod is a pod of the test cluster.
type pod struct {
	namespace, name, uid, serviceAccount string
}

func newPod(namespace, serviceAccount string) pod {
	return pod{namespace: namespace, name: serviceAccount + "-" + uuid.NewString()[:5], uid: uuid.NewString(), serviceAccount: serviceAccount}
}

// token signs a service-account token for p with the given audiences.
func (h *harness) token(p pod, audiences ...string) string {
	h.t.Helper()
	tok, err := h.issuer.Sign(baotest.PodIdentity{
		Namespace: p.namespace, ServiceAccount: p.serviceAccount, ServiceAccountUID: "sa-" + p.serviceAccount,
		PodName: p.name, PodUID: p.uid, NodeName: testNode,
	}, audiences, 10*time.Minute)
	if err != nil {
		h.t.Fatalf("sign token: %v", err)
	}
	return tok
}

func tokensJSON(audience, token string) string {
	data, _ := json.Marshal(map[string]any{audience: map[string]string{"token": token, "expirationTimestamp": "2030-01-01T00:00:00Z"}})
	return string(data)
}

// request returns the NodePublishVolumeRequest kubelet sends for p with
// the given secrets attribute; mutate changes it for a test case.
func (h *harness) request(p pod, secrets string) *csi.NodePublishVolumeRequest {
	attrs := map[string]string{
		spec.KubeletPodName:        p.name,
		spec.KubeletPodNamespace:   p.namespace,
		spec.KubeletPodUID:         p.uid,
		spec.KubeletServiceAccount: p.serviceAccount,
		spec.KubeletEphemeral:      "true",
		spec.KubeletTokens:         tokensJSON(testAudience, h.token(p, testAudience)),
	}
	if secrets != "" {
		attrs[spec.AttrSecrets] = secrets
	}
	return &csi.NodePublishVolumeRequest{
		VolumeId:   "csi-" + p.uid,
		TargetPath: filepath.Join(h.root, "pods", p.uid, "volumes", "kubernetes.io~csi", "phantom", "mount"),
		VolumeCapability: &csi.VolumeCapability{
			AccessType: &csi.VolumeCapability_Mount{Mount: &csi.VolumeCapability_MountVolume{}},
			AccessMode: &csi.VolumeCapability_AccessMode{Mode: csi.VolumeCapability_AccessMode_SINGLE_NODE_WRITER},
		},
		VolumeContext: attrs,
	}
}

// publish calls NodePublishVolume after creating the target's parent
// directory, as kubelet does.
func (h *harness) publish(req *csi.NodePublishVolumeRequest) error {
	if req.TargetPath != "" {
		_ = os.MkdirAll(filepath.Dir(req.TargetPath), 0o750)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := h.client.NodePublishVolume(ctx, req)
	return err
}

func (h *harness) unpublish(req *csi.NodePublishVolumeRequest) error {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := h.client.NodeUnpublishVolume(ctx, &csi.NodeUnpublishVolumeRequest{VolumeId: req.VolumeId, TargetPath: req.TargetPath})
	return err
}

// mountCount returns how many mounts /proc/self/mountinfo lists at target.
func mountCount(t *testing.T, target string) int {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatalf("read mountinfo: %v", err)
	}
	n := 0
	for _, line := range strings.Split(string(data), "\n") {
		if fields := strings.Fields(line); len(fields) > 4 && fields[4] == target {
			n++
		}
	}
	return n
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return string(data)
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
