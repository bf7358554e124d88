package cache

import (
	"bytes"
	"crypto/rand"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/phantom-sec/phantom/pkg/bao"
)

const canary = "canary-cache-0f3a"

var (
	payments = bao.Identity{Namespace: "payments", ServiceAccount: "api", Role: "payments-api"}
	billing  = bao.Identity{Namespace: "billing", ServiceAccount: "worker", Role: "billing-worker"}
	start    = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
)

type testClock struct{ now time.Time }

func (c *testClock) Now() time.Time { return c.now }

func newKey(t *testing.T) []byte {
	t.Helper()
	key := make([]byte, KeySize)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	return key
}

func openSealed(t *testing.T, dir string, key []byte, logs *bytes.Buffer) *Sealed {
	t.Helper()
	var logger *slog.Logger
	if logs != nil {
		logger = slog.New(slog.NewTextHandler(logs, nil))
	}
	s, err := OpenSealed(dir, key, logger)
	if err != nil {
		t.Fatalf("OpenSealed() = %v", err)
	}
	return s
}

func TestSealedRoundTrip(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openSealed(t, dir, newKey(t), nil)
	expires := start.Add(time.Hour)

	if err := s.Put("payments\x00api", "kv:secret/payments/db", []byte(canary), expires); err != nil {
		t.Fatalf("Put() = %v", err)
	}
	value, gotExpires, ok, err := s.Get("payments\x00api", "kv:secret/payments/db")
	if err != nil || !ok {
		t.Fatalf("Get() = ok %v, %v", ok, err)
	}
	if string(value) != canary || !gotExpires.Equal(expires) {
		t.Errorf("Get() = %q, %v; want the canary and %v", value, gotExpires, expires)
	}

	// Neither the value nor the identity or path is visible on the tmpfs.
	files, err := os.ReadDir(dir)
	if err != nil || len(files) != 1 {
		t.Fatalf("sealed directory holds %d files (%v), want 1", len(files), err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, files[0].Name()))
	if err != nil {
		t.Fatal(err)
	}
	for _, plain := range []string{canary, "payments", "secret/payments/db"} {
		if bytes.Contains(raw, []byte(plain)) || strings.Contains(files[0].Name(), plain) {
			t.Errorf("sealed file or its name contains %q", plain)
		}
	}
	if info, _ := os.Stat(filepath.Join(dir, files[0].Name())); info.Mode().Perm() != fileMode {
		t.Errorf("sealed file mode = %o, want %o", info.Mode().Perm(), fileMode)
	}
}

func TestSealedDiscardsBadEntries(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		damage func(t *testing.T, dir string, s *Sealed) *Sealed
	}{
		{"flipped byte", func(t *testing.T, dir string, s *Sealed) *Sealed {
			path := s.path("a", "x")
			raw, _ := os.ReadFile(path)
			raw[len(raw)-1] ^= 1
			must(t, os.WriteFile(path, raw, fileMode))
			return s
		}},
		{"entry of another identity moved over it", func(t *testing.T, dir string, s *Sealed) *Sealed {
			must(t, s.Put("b", "x", []byte("other"), start.Add(time.Hour)))
			must(t, os.Rename(s.path("b", "x"), s.path("a", "x")))
			return s
		}},
		{"expiry changed", func(t *testing.T, dir string, s *Sealed) *Sealed {
			path := s.path("a", "x")
			raw, _ := os.ReadFile(path)
			raw[len(magic)+7]++
			must(t, os.WriteFile(path, raw, fileMode))
			return s
		}},
		{"key of a previous boot", func(t *testing.T, dir string, s *Sealed) *Sealed {
			return openSealed(t, dir, newKey(t), nil)
		}},
		{"truncated", func(t *testing.T, dir string, s *Sealed) *Sealed {
			must(t, os.WriteFile(s.path("a", "x"), []byte(magic), fileMode))
			return s
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			var logs bytes.Buffer
			s := openSealed(t, dir, newKey(t), nil)
			must(t, s.Put("a", "x", []byte(canary), start.Add(time.Hour)))
			s = tt.damage(t, dir, s)
			s.log = slog.New(slog.NewTextHandler(&logs, nil))

			value, _, ok, err := s.Get("a", "x")

			if ok || value != nil || !errors.Is(err, ErrCorrupt) {
				t.Errorf("Get() = %q, ok %v, %v; want nothing and ErrCorrupt", value, ok, err)
			}
			if _, err := os.Stat(s.path("a", "x")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("bad entry still on disk: stat = %v", err)
			}
			if !strings.Contains(logs.String(), "discarding sealed cache entry") {
				t.Errorf("no log line for the discarded entry: %q", logs.String())
			}
			if strings.Contains(logs.String(), canary) {
				t.Error("log line contains the secret")
			}
		})
	}
}

func TestSealedSweep(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openSealed(t, dir, newKey(t), nil)
	must(t, s.Put("a", "old", []byte("1"), start.Add(-2*time.Hour)))
	must(t, s.Put("a", "grace", []byte("2"), start.Add(-30*time.Minute)))
	must(t, s.Put("a", "fresh", []byte("3"), start.Add(time.Hour)))
	must(t, os.WriteFile(filepath.Join(dir, tmpPrefix+"123"), []byte("partial"), fileMode))
	must(t, os.WriteFile(filepath.Join(dir, "junk"), []byte("not sealed"), fileMode))

	deleted, err := s.Sweep(start, time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	if deleted != 3 {
		t.Errorf("Sweep() deleted %d files, want 3 (expired, temporary, junk)", deleted)
	}
	for name, want := range map[string]bool{"old": false, "grace": true, "fresh": true} {
		if _, _, ok, _ := s.Get("a", name); ok != want {
			t.Errorf("entry %q present = %v after sweep, want %v", name, ok, want)
		}
	}
}

func TestCacheTiers(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	key := newKey(t)
	clock := &testClock{now: start}
	reg := prometheus.NewRegistry()
	c := New(Config{Sealed: openSealed(t, dir, key, nil), Grace: time.Hour, Now: clock.Now, Registerer: reg})
	secret := bao.NewSecret(map[string]any{"password": canary}, "", 0, false)
	must(t, c.Put(payments, "kv:secret/payments/db", &Entry{Secret: secret, Fetched: start, Expires: start.Add(5 * time.Minute), ServiceAccountUID: "uid-1"}))

	// Memory first.
	if _, tier, ok := c.Fresh(payments, "kv:secret/payments/db", 5*time.Minute); !ok || tier != TierHot {
		t.Errorf("Fresh() = tier %q ok %v, want hot", tier, ok)
	}
	// Another identity never sees the copy.
	if _, _, ok := c.Fresh(billing, "kv:secret/payments/db", 5*time.Minute); ok {
		t.Error("Fresh() for another identity returned a copy")
	}
	// Too old for a shorter refresh interval.
	clock.now = start.Add(2 * time.Minute)
	if _, _, ok := c.Fresh(payments, "kv:secret/payments/db", time.Minute); ok {
		t.Error("Fresh() with maxAge 1m returned a 2-minute-old copy")
	}

	// A restarted daemon: new memory, same sealed directory and key.
	restarted := New(Config{Sealed: openSealed(t, dir, key, nil), Grace: time.Hour, Now: clock.Now})
	entry, tier, ok := restarted.Fresh(payments, "kv:secret/payments/db", 5*time.Minute)
	if !ok || tier != TierSealed {
		t.Fatalf("Fresh() after restart = tier %q ok %v, want sealed", tier, ok)
	}
	if got, _ := entry.Secret.Field("password"); string(got) != canary || entry.ServiceAccountUID != "uid-1" || !entry.Fetched.Equal(start) {
		t.Errorf("sealed entry = %q, uid %q, fetched %v; want the stored copy", got, entry.ServiceAccountUID, entry.Fetched)
	}

	// Past expiry: not fresh, stale within grace, gone after it.
	clock.now = start.Add(30 * time.Minute)
	if _, _, ok := restarted.Fresh(payments, "kv:secret/payments/db", time.Hour); ok {
		t.Error("Fresh() returned an expired copy")
	}
	if _, tier, ok := restarted.Stale(payments, "kv:secret/payments/db"); !ok || tier != TierGrace {
		t.Errorf("Stale() within grace = tier %q ok %v, want grace", tier, ok)
	}
	clock.now = start.Add(5*time.Minute + time.Hour)
	if _, _, ok := restarted.Stale(payments, "kv:secret/payments/db"); ok {
		t.Error("Stale() returned a copy past the grace period")
	}
	if n := restarted.Sweep(); n != 2 {
		t.Errorf("Sweep() = %d, want the memory and the sealed copy", n)
	}

	got := map[string]float64{}
	for _, tier := range []Tier{TierHot, TierSealed, TierGrace} {
		got[string(tier)] = testutil.ToFloat64(c.metrics.hits.WithLabelValues(string(tier)))
	}
	if diff := cmp.Diff(map[string]float64{"hot": 1, "sealed": 0, "grace": 0}, got); diff != "" {
		t.Errorf("hits of the first cache (-want +got):\n%s", diff)
	}
}

func TestCacheWithoutSealedTier(t *testing.T) {
	t.Parallel()
	clock := &testClock{now: start}
	c := New(Config{Now: clock.Now})
	must(t, c.Put(payments, "k", &Entry{Secret: bao.NewSecret(map[string]any{"a": "b"}, "", 0, false), Fetched: start, Expires: start.Add(time.Minute)}))
	if _, tier, ok := c.Fresh(payments, "k", time.Minute); !ok || tier != TierHot {
		t.Errorf("Fresh() = %q %v, want hot", tier, ok)
	}
	c.Delete(payments, "k")
	if c.Len() != 0 {
		t.Errorf("Len() after Delete = %d, want 0", c.Len())
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
