package webhook

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
)

const (
	testService     = "phantom-webhook"
	testConfigName  = "phantom-webhook"
	testValidity    = 24 * time.Hour
	testSwitchDelay = 30 * time.Second
)

// bundleKeeper replaces the leader's reconciler. It collects every CA the
// replica published. sync writes the union of them into the caBundle of
// both webhooks, as the reconciler does with the CAs it retains.
type bundleKeeper struct {
	watcher *BundleWatcher

	mu        sync.Mutex
	published [][]byte // every PublishCA call
	known     []*x509.Certificate
	fail      error
}

func (k *bundleKeeper) PublishCA(_ context.Context, pemCerts []byte) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.fail != nil {
		return k.fail
	}
	k.published = append(k.published, bytes.Clone(pemCerts))
	return nil
}

func (k *bundleKeeper) publications() [][]byte {
	k.mu.Lock()
	defer k.mu.Unlock()
	return append([][]byte(nil), k.published...)
}

// sync puts every CA published so far into the caBundle.
func (k *bundleKeeper) sync(t *testing.T) {
	t.Helper()
	k.mu.Lock()
	for _, p := range k.published {
		for _, cert := range parsePEMCerts(t, p) {
			if !containsCert(k.known, cert) {
				k.known = append(k.known, cert)
			}
		}
	}
	var bundle []byte
	for _, cert := range k.known {
		bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})...)
	}
	k.mu.Unlock()

	k.watcher.Set(&admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: testConfigName},
		Webhooks: []admissionregistrationv1.MutatingWebhook{
			{Name: "namespace.pods.secrets.phantom.dev", ClientConfig: admissionregistrationv1.WebhookClientConfig{CABundle: bundle}},
			{Name: "pod.pods.secrets.phantom.dev", ClientConfig: admissionregistrationv1.WebhookClientConfig{CABundle: bundle}},
		},
	})
}

// pool returns the CAs of the caBundle as the API server would load them.
func (k *bundleKeeper) pool() *x509.CertPool {
	k.mu.Lock()
	defer k.mu.Unlock()
	pool := x509.NewCertPool()
	for _, cert := range k.known {
		pool.AddCert(cert)
	}
	return pool
}

func parsePEMCerts(t *testing.T, data []byte) []*x509.Certificate {
	t.Helper()
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return certs
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatalf("parse published certificate: %v", err)
		}
		certs = append(certs, cert)
	}
}

func containsCert(certs []*x509.Certificate, cert *x509.Certificate) bool {
	for _, c := range certs {
		if c.Equal(cert) {
			return true
		}
	}
	return false
}

// tlsRig is a webhook server on 127.0.0.1 with a CertManager on a fake
// clock.
type tlsRig struct {
	clock   *clocktesting.FakeClock
	keeper  *bundleKeeper
	manager *CertManager
	addr    string
}

func newTLSRig(t *testing.T) *tlsRig {
	t.Helper()
	clock := clocktesting.NewFakeClock(time.Now())
	keeper := &bundleKeeper{watcher: NewBundleWatcher(testConfigName)}
	manager, err := NewCertManager(CertManagerConfig{
		ServiceName: testService, Namespace: testOwnNamespace,
		Validity: testValidity, SwitchDelay: testSwitchDelay,
		Publisher: keeper, Trust: keeper.watcher, Clock: clock,
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}

	h, _ := newTestHandler(t, testNamespaces)
	server, err := NewServer(ServerConfig{
		Mutate: h, GetCertificate: manager.GetCertificate, Ready: manager.Ready,
		Gatherer: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := server.Serve(ctx, ln); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	wg.Go(func() {
		if err := manager.Run(ctx); err != nil {
			t.Errorf("CertManager.Run: %v", err)
		}
	})
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	return &tlsRig{clock: clock, keeper: keeper, manager: manager, addr: ln.Addr().String()}
}

// get sends one request on a new connection, trusting only pool, and
// returns the status and the fingerprint of the served certificate.
func (r *tlsRig) get(path string, pool *x509.CertPool, minVersion, maxVersion uint16) (int, string, error) {
	var served string
	transport := &http.Transport{
		TLSClientConfig: &tls.Config{
			RootCAs:    pool,
			ServerName: testService + "." + testOwnNamespace + ".svc",
			Time:       r.clock.Now,
			MinVersion: minVersion,
			MaxVersion: maxVersion,
			VerifyConnection: func(cs tls.ConnectionState) error {
				sum := sha256.Sum256(cs.PeerCertificates[0].Raw)
				served = string(sum[:])
				return nil
			},
		},
		DisableKeepAlives: true,
	}
	defer transport.CloseIdleConnections()
	client := &http.Client{Transport: transport, Timeout: 10 * time.Second}

	resp, err := client.Get("https://" + r.addr + path)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode, served, nil
}

// waitFor polls cond until it holds or the timeout passes.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestTLSServesTrustedCertificate(t *testing.T) {
	t.Parallel()
	r := newTLSRig(t)
	waitFor(t, "the first CA is published", func() bool { return len(r.keeper.publications()) == 1 })

	if err := r.manager.Ready(); err == nil {
		t.Error("Ready() = nil before the caBundle contains the CA")
	}
	status, _, err := r.get("/readyz", x509.NewCertPool(), tls.VersionTLS12, 0)
	if err == nil {
		t.Errorf("request with an empty trust pool succeeded with status %d", status)
	}

	r.keeper.sync(t)
	status, _, err = r.get("/readyz", r.keeper.pool(), tls.VersionTLS12, tls.VersionTLS12)
	if err != nil || status != http.StatusOK {
		t.Fatalf("GET /readyz over TLS 1.2 = %d, %v; want 200", status, err)
	}
	status, _, err = r.get("/healthz", r.keeper.pool(), tls.VersionTLS13, 0)
	if err != nil || status != http.StatusOK {
		t.Fatalf("GET /healthz over TLS 1.3 = %d, %v; want 200", status, err)
	}
}

func TestTLSRejectsOldVersions(t *testing.T) {
	t.Parallel()
	r := newTLSRig(t)
	waitFor(t, "the first CA is published", func() bool { return len(r.keeper.publications()) == 1 })
	r.keeper.sync(t)

	for _, version := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		_, _, err := r.get("/healthz", r.keeper.pool(), version, version)
		if err == nil || !strings.Contains(err.Error(), "protocol version") {
			t.Errorf("%s handshake error = %v, want a protocol version error", tls.VersionName(version), err)
		}
	}
}

func TestTLSReadyzReportsUntrusted(t *testing.T) {
	t.Parallel()
	r := newTLSRig(t)
	waitFor(t, "the first CA is published", func() bool { return len(r.keeper.publications()) == 1 })

	// The client trusts the CA directly; the caBundle does not contain it
	// yet, so the replica is not ready.
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(r.keeper.publications()[0])
	status, _, err := r.get("/readyz", pool, tls.VersionTLS12, 0)
	if err != nil || status != http.StatusServiceUnavailable {
		t.Fatalf("GET /readyz = %d, %v; want 503", status, err)
	}

	r.keeper.sync(t)
	status, _, err = r.get("/readyz", pool, tls.VersionTLS12, 0)
	if err != nil || status != http.StatusOK {
		t.Fatalf("GET /readyz after sync = %d, %v; want 200", status, err)
	}
}

// TestTLSRotationWithoutFailedRequest runs requests without pause, each on
// a new connection that trusts only the caBundle of that moment, while the
// certificate rotates.
func TestTLSRotationWithoutFailedRequest(t *testing.T) {
	t.Parallel()
	r := newTLSRig(t)
	waitFor(t, "the first CA is published", func() bool { return len(r.keeper.publications()) == 1 })
	r.keeper.sync(t)
	_, first, err := r.get("/healthz", r.keeper.pool(), tls.VersionTLS12, 0)
	if err != nil {
		t.Fatal(err)
	}

	var requests, failures atomic.Int64
	var failure atomic.Value
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			status, _, err := r.get("/healthz", r.keeper.pool(), tls.VersionTLS12, 0)
			requests.Add(1)
			if err != nil || status != http.StatusOK {
				failures.Add(1)
				failure.Store(errors.Join(err, errors.New(http.StatusText(status))))
			}
		}
	})

	// At two thirds of the validity the manager publishes a second CA but
	// keeps serving the first certificate.
	waitFor(t, "the manager waits for rotation", r.clock.HasWaiters)
	r.clock.Step(testValidity * 2 / 3)
	waitFor(t, "the next CA is published", func() bool { return len(r.keeper.publications()) == 2 })
	if n := len(parsePEMCerts(t, r.keeper.publications()[1])); n != 2 {
		t.Fatalf("rotation published %d CAs, want the current and the next", n)
	}
	waitFor(t, "requests run", func() bool { return requests.Load() > 3 })
	assertServing(t, r, first, true)

	// Once the caBundle has the new CA, the manager waits SwitchDelay and
	// then serves the new certificate.
	r.keeper.sync(t)
	assertServing(t, r, first, true)
	stepped := stepUntil(t, r.clock, testSwitchDelay/10, "the new CA alone is published", func() bool {
		return len(r.keeper.publications()) == 3
	})
	if stepped < testSwitchDelay {
		t.Errorf("switched %s after the caBundle trusted the new CA, want at least %s", stepped, testSwitchDelay)
	}
	assertServing(t, r, first, false)

	before := requests.Load()
	waitFor(t, "more requests run", func() bool { return requests.Load() > before+3 })
	close(stop)
	wg.Wait()
	if failures.Load() > 0 {
		t.Fatalf("%d of %d requests failed during rotation, last: %v", failures.Load(), requests.Load(), failure.Load())
	}
	if err := r.manager.Ready(); err != nil {
		t.Errorf("Ready() after rotation = %v", err)
	}
}

// stepUntil advances the fake clock by step until cond holds, giving the
// manager time to react after each step, and returns the time stepped.
func stepUntil(t *testing.T, clock *clocktesting.FakeClock, step time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()
	var stepped time.Duration
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s after stepping %s", what, stepped)
		}
		clock.Step(step)
		stepped += step
		time.Sleep(2 * time.Millisecond)
	}
	return stepped
}

func assertServing(t *testing.T, r *tlsRig, fingerprint string, same bool) {
	t.Helper()
	_, served, err := r.get("/healthz", r.keeper.pool(), tls.VersionTLS12, 0)
	if err != nil {
		t.Fatal(err)
	}
	if (served == fingerprint) != same {
		t.Fatalf("serving the first certificate = %v, want %v", served == fingerprint, same)
	}
}

func TestCertManagerSwitchesBeforeExpiry(t *testing.T) {
	t.Parallel()
	r := newTLSRig(t)
	waitFor(t, "the first CA is published", func() bool { return len(r.keeper.publications()) == 1 })
	r.keeper.sync(t)
	_, first, err := r.get("/healthz", r.keeper.pool(), tls.VersionTLS12, 0)
	if err != nil {
		t.Fatal(err)
	}

	// The caBundle never receives the next CA. A minute before the first
	// certificate expires the manager switches anyway.
	waitFor(t, "the manager waits for rotation", r.clock.HasWaiters)
	r.clock.Step(testValidity * 2 / 3)
	waitFor(t, "the next CA is published", func() bool { return len(r.keeper.publications()) == 2 })
	waitFor(t, "the manager waits for trust", r.clock.HasWaiters)
	r.clock.Step(testValidity/3 - time.Minute)
	waitFor(t, "the manager switches", func() bool { return len(r.keeper.publications()) == 3 })

	r.keeper.sync(t)
	assertServing(t, r, first, false)
}

func TestCertManagerRetriesPublish(t *testing.T) {
	t.Parallel()
	clock := clocktesting.NewFakeClock(time.Now())
	keeper := &bundleKeeper{watcher: NewBundleWatcher(testConfigName), fail: errors.New("pods \"webhook-0\" is forbidden")}
	manager, err := NewCertManager(CertManagerConfig{
		ServiceName: testService, Namespace: testOwnNamespace, Validity: testValidity,
		Publisher: keeper, Trust: keeper.watcher, Clock: clock, Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- manager.Run(ctx) }()

	waitFor(t, "the manager waits to retry", clock.HasWaiters)
	keeper.mu.Lock()
	keeper.fail = nil
	keeper.mu.Unlock()
	clock.Step(publishRetryMin)
	waitFor(t, "the retry publishes", func() bool { return len(keeper.publications()) == 1 })

	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run() = %v, want nil after cancel", err)
	}
}

func TestCertificateProperties(t *testing.T) {
	t.Parallel()
	r := newTLSRig(t)
	leaf := r.manager.current.Load().leaf
	ca := r.manager.current.Load().ca

	wantNames := []string{"phantom-webhook", "phantom-webhook.phantom-system", "phantom-webhook.phantom-system.svc", "phantom-webhook.phantom-system.svc.cluster.local"}
	if strings.Join(leaf.DNSNames, ",") != strings.Join(wantNames, ",") {
		t.Errorf("DNS names = %v, want %v", leaf.DNSNames, wantNames)
	}
	if leaf.PublicKeyAlgorithm != x509.ECDSA || ca.PublicKeyAlgorithm != x509.ECDSA {
		t.Errorf("key algorithms = %v and %v, want ECDSA", leaf.PublicKeyAlgorithm, ca.PublicKeyAlgorithm)
	}
	if !ca.IsCA || leaf.IsCA {
		t.Errorf("IsCA = %v for the CA and %v for the leaf, want true and false", ca.IsCA, leaf.IsCA)
	}
	// Certificates store times in whole seconds.
	if got := leaf.NotAfter.Sub(r.clock.Now()); got <= testValidity-time.Second || got > testValidity {
		t.Errorf("leaf validity from now = %s, want %s", got, testValidity)
	}
	if err := leaf.CheckSignatureFrom(ca); err != nil {
		t.Errorf("leaf is not signed by the published CA: %v", err)
	}
}
