// Package cache keeps copies of the secrets Phantom read from OpenBao, so
// pods of one identity share reads and new pods can start while OpenBao is
// unreachable.
//
// Two tiers hold a copy. The hot tier is a map in memory. The sealed tier
// is a directory on a tmpfs (see Sealed), encrypted under a key from the
// kernel keyring, so a restarted daemon finds the copies again but a
// rebooted node does not. Entries are keyed by OpenBao identity (namespace,
// service account, role) and by a key naming the path and request
// parameters, and every read names the identity: one identity never gets
// another's copy.
//
// A copy is fresh until its expiry: the end of the lease of a dynamic
// secret, or the fetch time plus the refresh interval of a KV secret.
// Stale serves a copy for a grace period past that expiry. The caller
// decides when that is allowed: OpenBao unreachable and the pod's token
// verified offline.
//
// All methods are safe for concurrent use.
package cache

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/phantom-sec/phantom/pkg/bao"
)

// Tier names where a copy came from: the `tier` label of
// phantom_cache_hits_total.
type Tier string

// Tiers.
const (
	TierHot    Tier = "hot"
	TierSealed Tier = "sealed"
	TierGrace  Tier = "grace"
)

// Entry is a cached copy of one secret.
type Entry struct {
	Secret *bao.Secret
	// Fetched is when the copy was read from OpenBao.
	Fetched time.Time
	// Expires ends the copy's lease: the lease expiry of a dynamic secret,
	// or Fetched plus the refresh interval of a KV secret.
	Expires time.Time
	// ServiceAccountUID is the service account UID in the token of the pod
	// whose login read the copy; empty when unknown.
	ServiceAccountUID string
}

// sealedEntry is an Entry as sealed on disk.
type sealedEntry struct {
	Secret            json.RawMessage `json:"secret"`
	Fetched           time.Time       `json:"fetched"`
	ServiceAccountUID string          `json:"sa_uid,omitempty"`
}

// Config configures a Cache.
type Config struct {
	// Sealed is the sealed tier; nil keeps copies in memory only.
	Sealed *Sealed
	// Grace is how long past its expiry Stale still returns a copy.
	Grace time.Duration

	Now        func() time.Time
	Logger     *slog.Logger
	Registerer prometheus.Registerer
}

// Cache is the hot tier in front of an optional sealed tier.
type Cache struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics

	mu  sync.Mutex
	hot map[string]*Entry
}

// New returns an empty cache.
func New(cfg Config) *Cache {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Cache{cfg: cfg, log: cfg.Logger, metrics: newMetrics(cfg.Registerer), hot: make(map[string]*Entry)}
}

// Fresh returns the copy of key for id when it was fetched less than maxAge
// ago and has not expired. It looks in memory, then in the sealed tier.
func (c *Cache) Fresh(id bao.Identity, key string, maxAge time.Duration) (*Entry, Tier, bool) {
	now := c.cfg.Now()
	fresh := func(e *Entry) bool { return now.Sub(e.Fetched) < maxAge && now.Before(e.Expires) }

	entry, tier, ok := c.lookup(id, key)
	if !ok || !fresh(entry) {
		c.metrics.misses.Inc()
		return nil, "", false
	}
	c.metrics.hits.WithLabelValues(string(tier)).Inc()
	return entry, tier, true
}

// Stale returns the copy of key for id unless it expired more than the
// grace period ago. The tier is TierGrace when the copy has expired.
func (c *Cache) Stale(id bao.Identity, key string) (*Entry, Tier, bool) {
	now := c.cfg.Now()
	entry, tier, ok := c.lookup(id, key)
	if !ok || !now.Before(entry.Expires.Add(c.cfg.Grace)) {
		c.metrics.misses.Inc()
		return nil, "", false
	}
	if !now.Before(entry.Expires) {
		tier = TierGrace
	}
	c.metrics.hits.WithLabelValues(string(tier)).Inc()
	return entry, tier, true
}

// Put stores a copy in memory and, with a sealed tier, on the tmpfs. An
// error means only the sealed copy is missing; the memory copy is stored.
func (c *Cache) Put(id bao.Identity, key string, entry *Entry) error {
	c.mu.Lock()
	c.hot[hotKey(id, key)] = entry
	c.mu.Unlock()

	if c.cfg.Sealed == nil {
		return nil
	}
	secret, err := bao.EncodeSecret(entry.Secret)
	if err != nil {
		return err
	}
	value, err := json.Marshal(sealedEntry{Secret: secret, Fetched: entry.Fetched, ServiceAccountUID: entry.ServiceAccountUID})
	clear(secret)
	if err != nil {
		return fmt.Errorf("encode cache entry: %w", err)
	}
	defer clear(value)
	return c.cfg.Sealed.Put(scope(id), key, value, entry.Expires)
}

// Delete drops the copy of key for id from both tiers.
func (c *Cache) Delete(id bao.Identity, key string) {
	c.mu.Lock()
	delete(c.hot, hotKey(id, key))
	c.mu.Unlock()
	if c.cfg.Sealed != nil {
		c.cfg.Sealed.Delete(scope(id), key)
	}
}

// Sweep drops copies that expired more than the grace period ago from
// both tiers and returns how many it dropped.
func (c *Cache) Sweep() int {
	now := c.cfg.Now()
	dropped := 0
	c.mu.Lock()
	for k, e := range c.hot {
		if !now.Before(e.Expires.Add(c.cfg.Grace)) {
			delete(c.hot, k)
			dropped++
		}
	}
	c.mu.Unlock()

	if c.cfg.Sealed != nil {
		n, err := c.cfg.Sealed.Sweep(now, c.cfg.Grace)
		if err != nil {
			c.log.Warn("failed to sweep the sealed cache", "error", err.Error())
		}
		dropped += n
	}
	return dropped
}

// Len returns the number of copies in memory.
func (c *Cache) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.hot)
}

// lookup returns the copy from memory, else from the sealed tier, which
// also puts it back in memory.
func (c *Cache) lookup(id bao.Identity, key string) (*Entry, Tier, bool) {
	c.mu.Lock()
	entry, ok := c.hot[hotKey(id, key)]
	c.mu.Unlock()
	if ok {
		return entry, TierHot, true
	}
	if c.cfg.Sealed == nil {
		return nil, "", false
	}

	entry, err := c.unseal(id, key)
	if err != nil {
		if !errors.Is(err, ErrCorrupt) {
			c.log.Warn("failed to read the sealed cache", "error", err.Error())
		}
		return nil, "", false
	}
	if entry == nil {
		return nil, "", false
	}
	c.mu.Lock()
	c.hot[hotKey(id, key)] = entry
	c.mu.Unlock()
	return entry, TierSealed, true
}

func (c *Cache) unseal(id bao.Identity, key string) (*Entry, error) {
	value, expires, ok, err := c.cfg.Sealed.Get(scope(id), key)
	if err != nil || !ok {
		return nil, err
	}
	defer clear(value)

	var stored sealedEntry
	if err := json.Unmarshal(value, &stored); err != nil {
		c.cfg.Sealed.Delete(scope(id), key)
		return nil, fmt.Errorf("%w: decode: %w", ErrCorrupt, err)
	}
	secret, err := bao.DecodeSecret(stored.Secret)
	if err != nil {
		c.cfg.Sealed.Delete(scope(id), key)
		return nil, fmt.Errorf("%w: %w", ErrCorrupt, err)
	}
	return &Entry{Secret: secret, Fetched: stored.Fetched, Expires: expires, ServiceAccountUID: stored.ServiceAccountUID}, nil
}

func scope(id bao.Identity) string {
	return id.Namespace + "\x00" + id.ServiceAccount + "\x00" + id.Role
}

func hotKey(id bao.Identity, key string) string {
	return scope(id) + "\x00" + key
}
