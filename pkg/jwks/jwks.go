// Package jwks verifies Kubernetes service-account tokens offline, against
// the cluster's public keys, so that Phantom can hand a cached copy to a
// pod without asking OpenBao.
//
// The keys come from a Source: the API server's /openid/v1/jwks endpoint
// (in-cluster or at a URL) or a file. A Verifier keeps the last key set it
// fetched in memory and, through a Store, sealed on the node's tmpfs, so a
// daemon restarted while the API server is unreachable still has them.
// An unknown key id triggers a refetch, at most once per MinRefresh.
//
// A Verifier is safe for concurrent use.
package jwks

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"golang.org/x/sync/singleflight"

	"github.com/phantom-sec/phantom/pkg/satoken"
	"github.com/phantom-sec/phantom/pkg/secret"
)

// Defaults of Config.
const (
	DefaultRefresh    = time.Hour
	DefaultMinRefresh = 10 * time.Second
	// DefaultKeepFor is how long a stored key set stays usable without a
	// successful fetch. An older set is not used, because the cluster may
	// have retired one of its keys since.
	DefaultKeepFor = 7 * 24 * time.Hour
)

// storeName is the name of the key set in the Store.
const storeName = "service-account-jwks"

// ErrNoKeys means no key set could be fetched or loaded.
var ErrNoKeys = errors.New("cluster's service-account public keys are unavailable")

// Source returns the JSON Web Key Set of the cluster's service-account
// signing keys.
type Source interface {
	Fetch(ctx context.Context) ([]byte, error)
}

// Store keeps the key set across restarts; *cache.Sealed implements it.
type Store interface {
	Put(scope, name string, value []byte, expires time.Time) error
	Get(scope, name string) (value []byte, expires time.Time, ok bool, err error)
}

// Config configures a Verifier.
type Config struct {
	Source Source
	// Store keeps the keys across restarts; nil keeps them in memory.
	Store Store
	// Issuer is the required "iss" claim; empty skips the check.
	Issuer string
	// Refresh is how often the key set is fetched again.
	Refresh time.Duration
	// MinRefresh limits fetches prompted by unknown key ids.
	MinRefresh time.Duration
	// KeepFor is how long a stored key set stays usable.
	KeepFor time.Duration

	Now    func() time.Time
	Logger *slog.Logger
}

// Verifier verifies service-account tokens offline.
type Verifier struct {
	cfg     Config
	log     *slog.Logger
	fetches singleflight.Group

	mu        sync.Mutex
	keys      *jose.JSONWebKeySet
	fetchedAt time.Time
	triedAt   time.Time
}

// New returns a Verifier; it fetches keys on first use.
func New(cfg Config) *Verifier {
	if cfg.Refresh <= 0 {
		cfg.Refresh = DefaultRefresh
	}
	if cfg.MinRefresh <= 0 {
		cfg.MinRefresh = DefaultMinRefresh
	}
	if cfg.KeepFor <= 0 {
		cfg.KeepFor = DefaultKeepFor
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Verifier{cfg: cfg, log: cfg.Logger}
}

// Verify checks the token's signature against the cluster's keys and its
// issuer, and returns its claims. The caller checks the claims against the
// pod with satoken.Claims.Check. Errors wrap satoken.ErrUnverified,
// satoken.ErrMalformed or ErrNoKeys.
func (v *Verifier) Verify(ctx context.Context, token secret.String) (*satoken.Claims, error) {
	keys, err := v.current(ctx)
	if err != nil {
		return nil, err
	}
	claims, err := satoken.Verify(token, keys, v.cfg.Issuer)
	if !errors.Is(err, satoken.ErrUnverified) || !v.mayRefetch() {
		return claims, err
	}

	// The cluster may have rotated its key: fetch once more.
	if keys, fetchErr := v.refetch(ctx); fetchErr == nil {
		return satoken.Verify(token, keys, v.cfg.Issuer)
	}
	return nil, err
}

// current returns the keys in memory, loading or fetching them when there
// are none, and starting a background refetch when they are old.
func (v *Verifier) current(ctx context.Context) (*jose.JSONWebKeySet, error) {
	v.mu.Lock()
	keys, fetchedAt := v.keys, v.fetchedAt
	v.mu.Unlock()

	if keys == nil {
		if keys = v.load(); keys == nil {
			return v.refetch(ctx)
		}
	}
	if v.cfg.Now().Sub(fetchedAt) > v.cfg.Refresh && v.mayRefetch() {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			_, _ = v.refetch(ctx)
		}()
	}
	return keys, nil
}

// load returns the stored key set, or nil.
func (v *Verifier) load() *jose.JSONWebKeySet {
	if v.cfg.Store == nil {
		return nil
	}
	raw, expires, ok, err := v.cfg.Store.Get("", storeName)
	if err != nil {
		v.log.Warn("failed to load the stored service-account keys", "error", err.Error())
	}
	if !ok || !v.cfg.Now().Before(expires) {
		return nil
	}
	keys, err := parse(raw)
	if err != nil {
		v.log.Warn("stored service-account keys are invalid", "error", err.Error())
		return nil
	}

	v.mu.Lock()
	defer v.mu.Unlock()
	if v.keys == nil {
		v.keys = keys
		// fetchedAt stays zero, so the next Verify refetches in the background.
	}
	return v.keys
}

// refetch fetches the key set, once for all concurrent callers, stores it
// and returns it. On failure it returns the keys already held, if any.
func (v *Verifier) refetch(ctx context.Context) (*jose.JSONWebKeySet, error) {
	result, err, _ := v.fetches.Do("fetch", func() (any, error) {
		v.mu.Lock()
		v.triedAt = v.cfg.Now()
		v.mu.Unlock()

		raw, err := v.cfg.Source.Fetch(ctx)
		if err == nil {
			var keys *jose.JSONWebKeySet
			if keys, err = parse(raw); err == nil {
				v.keep(raw, keys)
				return keys, nil
			}
		}
		v.log.Warn("failed to fetch the cluster's service-account public keys", "error", err.Error())
		return nil, fmt.Errorf("%w: %w", ErrNoKeys, err)
	})
	if err == nil {
		return result.(*jose.JSONWebKeySet), nil
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.keys != nil {
		return v.keys, nil
	}
	return nil, err
}

func (v *Verifier) keep(raw []byte, keys *jose.JSONWebKeySet) {
	now := v.cfg.Now()
	v.mu.Lock()
	v.keys, v.fetchedAt = keys, now
	v.mu.Unlock()
	if v.cfg.Store != nil {
		if err := v.cfg.Store.Put("", storeName, raw, now.Add(v.cfg.KeepFor)); err != nil {
			v.log.Warn("failed to store the service-account public keys", "error", err.Error())
		}
	}
}

func (v *Verifier) mayRefetch() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.cfg.Now().Sub(v.triedAt) >= v.cfg.MinRefresh
}

func parse(raw []byte) (*jose.JSONWebKeySet, error) {
	var keys jose.JSONWebKeySet
	if err := json.Unmarshal(raw, &keys); err != nil {
		return nil, fmt.Errorf("parse JSON Web Key Set: %w", err)
	}
	if len(keys.Keys) == 0 {
		return nil, errors.New("parse JSON Web Key Set: the set contains no key")
	}
	for _, key := range keys.Keys {
		if !key.Valid() || !key.IsPublic() {
			return nil, fmt.Errorf("parse JSON Web Key Set: key %q is not a valid public key", key.KeyID)
		}
	}
	return &keys, nil
}
