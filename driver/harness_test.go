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
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/google/uuid"
	"github.com/openbao/openbao/api/v2"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/phantom-sec/phantom/pkg/bao"
	"github.com/phantom-sec/phantom/pkg/baotest"
	"github.com/phantom-sec/phantom/pkg/cache"
	"github.com/phantom-sec/phantom/pkg/circuit"
	"github.com/phantom-sec/phantom/pkg/fetch"
	"github.com/phantom-sec/phantom/pkg/jwks"
	"github.com/phantom-sec/phantom/pkg/keyring"
	"github.com/phantom-sec/phantom/pkg/spec"
	"github.com/phantom-sec/phantom/pkg/state"
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

	// clock is shared by the OpenBao test server, the driver and the
	// tokens the harness signs, so tests move time for all three.
	clock *baotest.Clock
	// stateDir is a real tmpfs holding the sealed cache and the index;
	// keyName names the sealed cache's key in the kernel keyring.
	stateDir string
	keyName  string
	maxBytes int64
	// tune changes the driver config of the next start.
	tune func(*Config)
	// productionBreaker gives the next start a breaker with the default
	// timings instead of the fast ones of the tests.
	productionBreaker bool
	driver            *Driver
	breaker           *circuit.Breaker
	stop              func()
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

	clock := baotest.NewClock(time.Now())
	h := &harness{t: t, bao: baotest.NewWithOptions(t, baotest.Options{Now: clock.Now}), clock: clock,
		logs: &lockedBuffer{}, reg: prometheus.NewRegistry(), root: t.TempDir()}
	h.stateDir = mountStateDir(t)
	h.keyName = "phantom-test:" + uuid.NewString()
	t.Cleanup(func() {
		if err := keyring.Remove(h.keyName); err != nil {
			t.Errorf("remove test key: %v", err)
		}
	})
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

// start runs a driver whose volumes may hold up to maxBytes, with the
// sealed cache and index in the state directory, offline token
// verification against the issuer's keys and a circuit breaker.
func (h *harness) start(maxBytes int64) {
	h.maxBytes = maxBytes
	cfg := h.config()
	if h.tune != nil {
		h.tune(&cfg)
	}
	h.startWith(cfg)
}

// config returns the driver config of the harness, with a fresh registry.
func (h *harness) config() Config {
	t := h.t
	h.reg = prometheus.NewRegistry()
	logger := slog.New(slog.NewJSONHandler(h.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	// The breaker exists before the client, and its probe needs the client.
	var client *bao.Client
	breakerCfg := circuit.Config{Name: "OpenBao", Logger: logger, Registerer: h.reg,
		Probe:        func(ctx context.Context) error { return client.Probe(ctx) },
		FirstBackoff: 100 * time.Millisecond, ProbeInterval: 50 * time.Millisecond, MaxProbeInterval: 200 * time.Millisecond}
	if h.productionBreaker {
		breakerCfg.FirstBackoff, breakerCfg.ProbeInterval, breakerCfg.MaxProbeInterval = 0, 0, 0
	}
	h.breaker = circuit.New(breakerCfg)
	client, err := bao.New(bao.Config{Address: h.bao.URL(), AuthMethod: bao.AuthJWT, Logger: logger, Registerer: h.reg, Breaker: h.breaker})
	if err != nil {
		t.Fatalf("bao.New: %v", err)
	}

	key, _, err := keyring.LoadOrCreate(h.keyName, cache.KeySize)
	must(t, err)
	sealed, err := cache.OpenSealed(filepath.Join(h.stateDir, "cache"), key, logger)
	must(t, err)
	index, err := state.Open(filepath.Join(h.stateDir, "volumes"))
	must(t, err)
	const grace = time.Hour
	return Config{
		Version: "test", NodeID: testNode,
		Bao: client, Sessions: bao.NewSessions(client, h.clock.Now), Fetcher: fetch.New(fetch.Config{Now: h.clock.Now}),
		Mounter: tmpfs.NewMounter(logger), Audience: testAudience, MaxVolumeBytes: h.maxBytes,
		RequestTimeout: 5 * time.Second, Logger: logger, Registerer: h.reg, Now: h.clock.Now,
		Cache:       cache.New(cache.Config{Sealed: sealed, Grace: grace, Now: h.clock.Now, Logger: logger, Registerer: h.reg}),
		Verifier:    jwks.New(jwks.Config{Source: jwks.StaticSource(h.issuer.JWKS()), Store: sealed, Issuer: testIssuer, Now: h.clock.Now, Logger: logger}),
		Breaker:     h.breaker,
		Index:       index,
		OutageWait:  -1,
		GracePeriod: grace,
	}
}

// restart stops the driver, keeping its mounts, and starts a new one on the
// same state directory and keyring key, which recovers the volumes.
func (h *harness) restart() {
	h.t.Helper()
	h.stop()
	h.start(h.maxBytes)
}

// startWith runs a driver with cfg on a fresh socket.
func (h *harness) startWith(cfg Config) {
	t := h.t
	h.mounter = cfg.Mounter.(*tmpfs.Mounter)
	d, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if err := d.Recover(context.Background()); err != nil {
		t.Fatalf("Recover: %v", err)
	}
	h.driver = d

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
	var once sync.Once
	h.stop = func() {
		once.Do(func() {
			conn.Close()
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Serve() = %v", err)
			}
			if cfg.Breaker != nil {
				cfg.Breaker.Close()
			}
		})
	}
	t.Cleanup(func() {
		h.stop()
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

// token signs a service-account token for p with the given audiences,
// issued now on the harness clock.
func (h *harness) token(p pod, audiences ...string) string {
	h.t.Helper()
	tok, err := h.issuer.SignAt(baotest.PodIdentity{
		Namespace: p.namespace, ServiceAccount: p.serviceAccount, ServiceAccountUID: "sa-" + p.serviceAccount,
		PodName: p.name, PodUID: p.uid, NodeName: testNode,
	}, audiences, h.now(), 10*time.Minute)
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

// metric returns the value of the counter or gauge name whose labels
// include the given name-value pairs, from the current driver's registry.
func (h *harness) metric(name string, labels ...string) float64 {
	h.t.Helper()
	families, err := h.reg.Gather()
	must(h.t, err)
	for _, mf := range families {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			if hasLabels(m.GetLabel(), labels) {
				return m.GetCounter().GetValue() + m.GetGauge().GetValue()
			}
		}
	}
	return 0
}

func hasLabels(pairs []*dto.LabelPair, want []string) bool {
	for i := 0; i+1 < len(want); i += 2 {
		found := false
		for _, p := range pairs {
			if p.GetName() == want[i] && p.GetValue() == want[i+1] {
				found = true
			}
		}
		if !found {
			return false
		}
	}
	return true
}

// forgedToken signs the claims of req's pod with a key the cluster does not
// have: OpenBao and the offline verification both reject it.
func (h *harness) forgedToken(t *testing.T, req *csi.NodePublishVolumeRequest) string {
	t.Helper()
	stranger, err := baotest.NewIssuer(testIssuer)
	must(t, err)
	attrs := req.VolumeContext
	tok, err := stranger.SignAt(baotest.PodIdentity{
		Namespace: attrs[spec.KubeletPodNamespace], ServiceAccount: attrs[spec.KubeletServiceAccount],
		ServiceAccountUID: "sa-" + attrs[spec.KubeletServiceAccount], PodName: attrs[spec.KubeletPodName],
		PodUID: attrs[spec.KubeletPodUID], NodeName: testNode,
	}, []string{testAudience}, h.now(), 10*time.Minute)
	must(t, err)
	return tok
}

// mountsUnder counts the mounts below root in /proc/self/mountinfo.
func mountsUnder(t *testing.T, root string) int {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	must(t, err)
	n := 0
	for _, line := range strings.Split(string(data), "\n") {
		if fields := strings.Fields(line); len(fields) > 4 && strings.HasPrefix(fields[4], root+"/") {
			n++
		}
	}
	return n
}

// now returns the harness clock's time, or the real time for a harness
// built without one.
func (h *harness) now() time.Time {
	if h.clock == nil {
		return time.Now()
	}
	return h.clock.Now()
}

// mountStateDir mounts a tmpfs for the daemon's state, as /run/phantom is
// on a node, and unmounts it when the test ends.
func mountStateDir(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "state")
	must(t, os.MkdirAll(dir, 0o700))
	must(t, syscall.Mount("phantom-test-state", dir, "tmpfs", syscall.MS_NOSUID|syscall.MS_NODEV|syscall.MS_NOEXEC, "size=16m,mode=0700"))
	t.Cleanup(func() {
		if err := syscall.Unmount(dir, 0); err != nil {
			t.Errorf("unmount state directory: %v", err)
		}
	})
	return dir
}

// republishRequest returns req with a fresh token, as kubelet sends on each
// republish.
func (h *harness) republishRequest(req *csi.NodePublishVolumeRequest, p pod) *csi.NodePublishVolumeRequest {
	next := proto.Clone(req).(*csi.NodePublishVolumeRequest)
	next.VolumeContext[spec.KubeletTokens] = tokensJSON(testAudience, h.token(p, testAudience))
	return next
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
