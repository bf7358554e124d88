package driver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/phantom-sec/phantom/pkg/bao"
	"github.com/phantom-sec/phantom/pkg/cache"
	"github.com/phantom-sec/phantom/pkg/fetch"
	"github.com/phantom-sec/phantom/pkg/secret"
	"github.com/phantom-sec/phantom/pkg/state"
)

// Cache key prefixes.
const (
	keyKV    = "kv:"
	keyList  = "list:"
	keyDyn   = "dyn:"
	keyLease = "lease:"
)

// source is the fetch.Source of one publish or rotation: the cache in front
// of the identity's OpenBao session, which it gets only when a read needs
// OpenBao.
type source struct {
	d        *Driver
	id       bao.Identity
	saUID    string
	token    secret.String // empty for background work
	verified bool          // the pod's token verified offline: cached copies may be served
	noGrace  bool          // fail rather than serve an expired copy: the volume keeps its files
	maxAge   time.Duration // of KV copies
	// held are dynamic secrets the volume keeps; a read of one of them
	// returns it instead of issuing new credentials.
	held map[string]*heldLease

	mu       sync.Mutex
	session  *bao.Session
	cached   bool
	issued   []*heldLease
	grace    int
	degraded bool
	missing  []string
}

var _ fetch.Source = (*source)(nil)

func (d *Driver) newSource(vol *volume, token secret.String, verified bool) *source {
	return &source{
		d: d, id: vol.identity, saUID: vol.saUID, token: token, verified: verified,
		maxAge: vol.refresh, held: vol.heldByKey(),
	}
}

// ReadKV returns a fresh cached copy to a verified pod, else reads
// OpenBao, sharing the read with concurrent readers of the identity. When
// OpenBao is unavailable a verified pod gets a copy within its grace period.
func (s *source) ReadKV(ctx context.Context, mount, path string) (*bao.Secret, error) {
	return s.readShared(ctx, keyKV+mount+"/"+path, func(session *bao.Session) (*bao.Secret, error) {
		return session.ReadKV(ctx, mount, path)
	})
}

// ListKV is ReadKV for the key list of a KV folder.
func (s *source) ListKV(ctx context.Context, mount, path string) ([]string, error) {
	list, err := s.readShared(ctx, keyList+mount+"/"+path, func(session *bao.Session) (*bao.Secret, error) {
		keys, err := session.ListKV(ctx, mount, path)
		if err != nil {
			return nil, err
		}
		return bao.NewSecret(map[string]any{"keys": keys}, "", 0, false), nil
	})
	if err != nil {
		return nil, err
	}
	raw, _ := list.Field("keys")
	return decodeKeys(raw.Reveal())
}

// ReadDynamic returns the volume's own secret for the path and data when
// it holds one, else issues new credentials. When OpenBao is unavailable a
// verified pod gets a copy of the identity's latest credentials, without
// their lease, which belongs to another volume.
func (s *source) ReadDynamic(ctx context.Context, path string, data map[string]any) (*bao.Secret, error) {
	key := fetch.DynamicKey(path, data)
	if held := s.held[key]; held != nil && held.secret != nil {
		return held.secret, nil
	}

	secret, err := s.withSession(ctx, func(session *bao.Session) (*bao.Secret, error) {
		return session.ReadDynamic(ctx, path, data)
	})
	if err == nil {
		s.keepIssued(key, path, secret)
		return secret, nil
	}
	if !s.graceAllowed(err) {
		return nil, err
	}
	if entry, tier, ok := s.d.cfg.Cache.Stale(s.id, keyDyn+key); ok && s.sameServiceAccount(entry) {
		s.served(tier, true)
		return entry.Secret.WithoutLease(), nil
	}
	s.miss(path)
	return nil, err
}

func (s *source) readShared(ctx context.Context, key string, read func(*bao.Session) (*bao.Secret, error)) (*bao.Secret, error) {
	c := s.d.cfg.Cache
	if s.verified {
		if entry, _, ok := c.Fresh(s.id, key, s.maxAge); ok && s.sameServiceAccount(entry) {
			return entry.Secret, nil
		}
	}

	flight := strings.Join([]string{s.id.Namespace, s.id.ServiceAccount, s.id.Role, key}, "\x00")
	result, err, _ := s.d.reads.Do(flight, func() (any, error) {
		// A flight that just ended may have filled the cache.
		if s.verified {
			if entry, _, ok := c.Fresh(s.id, key, s.maxAge); ok && s.sameServiceAccount(entry) {
				return entry.Secret, nil
			}
		}
		secret, err := s.withSession(ctx, read)
		if err != nil {
			return nil, err
		}
		now := s.d.cfg.Now()
		s.put(key, &cache.Entry{Secret: secret, Fetched: now, Expires: now.Add(s.maxAge), ServiceAccountUID: s.saUID})
		return secret, nil
	})
	if err == nil {
		return result.(*bao.Secret), nil
	}
	if !s.graceAllowed(err) {
		return nil, err
	}
	if entry, tier, ok := c.Stale(s.id, key); ok && s.sameServiceAccount(entry) {
		s.served(tier, false)
		return entry.Secret, nil
	}
	s.miss(strings.TrimPrefix(strings.TrimPrefix(key, keyKV), keyList))
	return nil, err
}

// graceAllowed reports whether a failed read may fall back to a cached
// copy: only when OpenBao is unavailable, for a verified pod.
func (s *source) graceAllowed(err error) bool {
	return errors.Is(err, bao.ErrUnavailable) && s.verified && !s.noGrace
}

// withSession runs read with the identity's session. A verified pod may use
// the cached session; an unverified one logs in, so OpenBao checks its
// token. When OpenBao rejects a cached token, it logs in once more.
func (s *source) withSession(ctx context.Context, read func(*bao.Session) (*bao.Secret, error)) (*bao.Secret, error) {
	session, cached, err := s.getSession(ctx)
	if err != nil {
		return nil, err
	}
	secret, err := read(session)
	if !cached || !errors.Is(err, bao.ErrPermissionDenied) || s.token == "" {
		return secret, err
	}

	s.d.cfg.Sessions.Forget(s.id)
	s.mu.Lock()
	s.session = nil
	s.mu.Unlock()
	session, _, loginErr := s.getSession(ctx)
	if loginErr != nil {
		return nil, fmt.Errorf("%w (login again after a rejected cached token: %w)", err, loginErr)
	}
	return read(session)
}

func (s *source) getSession(ctx context.Context) (*bao.Session, bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.session != nil {
		return s.session, s.cached, nil
	}

	var err error
	switch {
	case s.token == "":
		s.session, err = s.d.cfg.Sessions.Renewed(ctx, s.id)
		s.cached = true
	case s.verified:
		s.session, s.cached, err = s.d.cfg.Sessions.Lookup(ctx, s.id, s.token)
	default:
		s.session, err = s.d.cfg.Sessions.Login(ctx, s.id, s.token)
	}
	return s.session, s.cached, err
}

// keepIssued records new credentials as the volume's lease and caches them:
// under the lease for a restarted daemon, and as the identity's latest
// credentials for new pods during an outage.
func (s *source) keepIssued(key, path string, secret *bao.Secret) {
	now := s.d.cfg.Now()
	entry := &cache.Entry{Secret: secret, Fetched: now, Expires: now.Add(secret.LeaseDuration), ServiceAccountUID: s.saUID}
	s.put(keyDyn+key, entry)
	if secret.LeaseID == "" {
		return
	}
	s.put(keyLease+secret.LeaseID, entry)

	s.mu.Lock()
	defer s.mu.Unlock()
	s.issued = append(s.issued, &heldLease{secret: secret, Lease: state.Lease{
		ID: secret.LeaseID, Key: key, Path: path, Issued: now, Expires: now.Add(secret.LeaseDuration),
		TTL: secret.LeaseDuration, Renewable: secret.Renewable,
	}})
}

func (s *source) put(key string, entry *cache.Entry) {
	if err := s.d.cfg.Cache.Put(s.id, key, entry); err != nil {
		s.d.log.Warn("failed to seal a cache entry; it stays in memory only", logKeyError, err.Error())
	}
}

// sameServiceAccount rejects a copy read for a service account of the same
// name that has since been deleted and created again.
func (s *source) sameServiceAccount(entry *cache.Entry) bool {
	return entry.ServiceAccountUID == "" || s.saUID == "" || entry.ServiceAccountUID == s.saUID
}

func (s *source) served(tier cache.Tier, shared bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if tier == cache.TierGrace {
		s.grace++
	}
	s.degraded = s.degraded || tier == cache.TierGrace || shared
}

func (s *source) miss(path string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.missing = append(s.missing, path)
}

// revokeUnused revokes leases issued by a fetch whose content was not used.
func (s *source) revokeUnused(ctx context.Context) {
	s.mu.Lock()
	issued := s.issued
	s.issued = nil
	s.mu.Unlock()
	s.d.revokeLeases(ctx, s.d.log, s.id, issued)
}

func decodeKeys(raw []byte) ([]string, error) {
	var keys []string
	if err := json.Unmarshal(raw, &keys); err != nil {
		return nil, fmt.Errorf("decode cached key list: %w", err)
	}
	return keys, nil
}
