package jwks

import (
	"context"
	"crypto/rand"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/phantom-sec/phantom/pkg/baotest"
	"github.com/phantom-sec/phantom/pkg/cache"
	"github.com/phantom-sec/phantom/pkg/satoken"
	"github.com/phantom-sec/phantom/pkg/secret"
)

const issuerURL = "https://kubernetes.default.svc.cluster.local"

var pod = baotest.PodIdentity{Namespace: "payments", ServiceAccount: "api", PodName: "api-0", PodUID: "uid-1"}

// switchSource serves the key set it holds, or fails when it holds none,
// and counts fetches.
type switchSource struct {
	mu      sync.Mutex
	raw     []byte
	fetches int
}

func (s *switchSource) set(raw []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.raw = raw
}

func (s *switchSource) Fetch(context.Context) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.fetches++
	if s.raw == nil {
		return nil, errors.New("connection refused")
	}
	return s.raw, nil
}

func newIssuer(t *testing.T) *baotest.Issuer {
	t.Helper()
	issuer, err := baotest.NewIssuer(issuerURL)
	if err != nil {
		t.Fatal(err)
	}
	return issuer
}

func sign(t *testing.T, issuer *baotest.Issuer) secret.String {
	t.Helper()
	tok, err := issuer.Sign(pod, []string{"openbao"}, 10*time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	return secret.String(tok)
}

func newSealed(t *testing.T, dir string, key []byte) *cache.Sealed {
	t.Helper()
	s, err := cache.OpenSealed(dir, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestVerifyAgainstClusterKeys(t *testing.T) {
	t.Parallel()
	cluster, stranger := newIssuer(t), newIssuer(t)
	v := New(Config{Source: StaticSource(cluster.JWKS()), Issuer: issuerURL})

	claims, err := v.Verify(context.Background(), sign(t, cluster))
	if err != nil {
		t.Fatalf("Verify() = %v", err)
	}
	if claims.Namespace != "payments" || claims.ServiceAccount != "api" {
		t.Errorf("claims = %s/%s, want payments/api", claims.Namespace, claims.ServiceAccount)
	}
	if _, err := v.Verify(context.Background(), sign(t, stranger)); !errors.Is(err, satoken.ErrUnverified) {
		t.Errorf("Verify() of a token signed by another key = %v, want ErrUnverified", err)
	}
}

// TestKeysSurviveRestart stores the keys sealed, then verifies in a new
// Verifier whose source fails, as after a restart without an API server.
func TestKeysSurviveRestart(t *testing.T) {
	t.Parallel()
	cluster := newIssuer(t)
	dir, key := t.TempDir(), make([]byte, cache.KeySize)
	_, _ = rand.Read(key)
	first := New(Config{Source: StaticSource(cluster.JWKS()), Store: newSealed(t, dir, key), Issuer: issuerURL})
	if _, err := first.Verify(context.Background(), sign(t, cluster)); err != nil {
		t.Fatalf("Verify() = %v", err)
	}

	down := &switchSource{}
	restarted := New(Config{Source: down, Store: newSealed(t, dir, key), Issuer: issuerURL})
	if _, err := restarted.Verify(context.Background(), sign(t, cluster)); err != nil {
		t.Errorf("Verify() after restart with the API server down = %v, want the stored keys to verify", err)
	}

	// Stored keys past KeepFor are not used.
	late := New(Config{Source: down, Store: newSealed(t, dir, key), Issuer: issuerURL,
		Now: func() time.Time { return time.Now().Add(DefaultKeepFor + time.Hour) }})
	if _, err := late.Verify(context.Background(), sign(t, cluster)); !errors.Is(err, ErrNoKeys) {
		t.Errorf("Verify() with only week-old stored keys = %v, want ErrNoKeys", err)
	}
}

func TestVerifyRefetchesOnKeyRotation(t *testing.T) {
	t.Parallel()
	oldKey, newKey := newIssuer(t), newIssuer(t)
	source := &switchSource{raw: oldKey.JWKS()}
	now := time.Now()
	clock := func() time.Time { return now }
	v := New(Config{Source: source, Issuer: issuerURL, Now: clock})
	if _, err := v.Verify(context.Background(), sign(t, oldKey)); err != nil {
		t.Fatal(err)
	}

	source.set(newKey.JWKS())
	// Within MinRefresh of the last fetch, an unknown key is not refetched.
	if _, err := v.Verify(context.Background(), sign(t, newKey)); !errors.Is(err, satoken.ErrUnverified) {
		t.Errorf("Verify() right after a fetch = %v, want ErrUnverified", err)
	}
	now = now.Add(DefaultMinRefresh)
	if _, err := v.Verify(context.Background(), sign(t, newKey)); err != nil {
		t.Errorf("Verify() with a rotated key = %v, want a refetch to find it", err)
	}
	if source.fetches != 2 {
		t.Errorf("fetches = %d, want 2", source.fetches)
	}
}

func TestVerifyWithoutKeys(t *testing.T) {
	t.Parallel()
	v := New(Config{Source: &switchSource{}})
	if _, err := v.Verify(context.Background(), sign(t, newIssuer(t))); !errors.Is(err, ErrNoKeys) {
		t.Errorf("Verify() = %v, want ErrNoKeys", err)
	}
	bad := New(Config{Source: StaticSource(`{"keys":[]}`)})
	if _, err := bad.Verify(context.Background(), sign(t, newIssuer(t))); !errors.Is(err, ErrNoKeys) {
		t.Errorf("Verify() with an empty key set = %v, want ErrNoKeys", err)
	}
}

func TestURLSource(t *testing.T) {
	t.Parallel()
	cluster := newIssuer(t)
	server := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != jwksPath || r.Header.Get("Authorization") != "Bearer node-token" {
			http.Error(w, "forbidden", http.StatusForbidden)
			return
		}
		_, _ = w.Write(cluster.JWKS())
	}))
	t.Cleanup(server.Close)
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("node-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	source := &URLSource{URL: server.URL + jwksPath, Client: server.Client(), TokenFile: tokenFile}
	v := New(Config{Source: source, Issuer: issuerURL})
	if _, err := v.Verify(context.Background(), sign(t, cluster)); err != nil {
		t.Errorf("Verify() with keys from the URL = %v", err)
	}

	wrong := &URLSource{URL: server.URL + "/other", Client: server.Client()}
	if _, err := wrong.Fetch(context.Background()); err == nil {
		t.Error("Fetch() of a path answering 403 succeeded")
	}
}
