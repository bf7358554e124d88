package bao

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/phantom-sec/phantom/pkg/secret"
)

// Identity is the OpenBao identity a pod logs in as. Pods that share it
// share one OpenBao token.
type Identity struct {
	Namespace      string
	ServiceAccount string
	Role           string
}

func (id Identity) key() string {
	return id.Namespace + "\x00" + id.ServiceAccount + "\x00" + id.Role
}

// ErrNoSession means no cached session of the identity is valid, so a
// request without a pod token cannot be made for it.
var ErrNoSession = errors.New("no valid OpenBao session for the identity")

// Sessions caches one Session per Identity and logs in again when the token
// nears expiry, so N pods of one service account on a node cost one login
// per token lifetime. Concurrent logins for one identity are made once.
//
// A cached token may be handed to a pod only once the pod's own
// service-account token has been verified: by OpenBao at login, or offline
// by the caller (signature against the cluster's keys, issuer, audience,
// expiry, namespace and service account). Callers that cannot verify a pod
// token offline use Login, which has OpenBao verify it.
type Sessions struct {
	client *Client
	now    func() time.Time

	mu      sync.Mutex
	entries map[string]*cachedSession
	logins  singleflight.Group
}

type cachedSession struct {
	session  *Session
	loggedIn time.Time
	// refreshAt is two thirds into the token's TTL: after it a publish logs
	// in again with its pod's token, while background work may still use or
	// renew the token until expires.
	refreshAt time.Time
	expires   time.Time
}

// NewSessions returns an empty session cache for client.
func NewSessions(client *Client, now func() time.Time) *Sessions {
	if now == nil {
		now = time.Now
	}
	return &Sessions{client: client, now: now, entries: make(map[string]*cachedSession)}
}

// Get returns a session for id, logging in with jwt when no cached token is
// fresh enough. A token is reused until two thirds of its TTL have passed.
func (m *Sessions) Get(ctx context.Context, id Identity, jwt secret.String) (*Session, error) {
	session, _, err := m.get(ctx, id, jwt)
	return session, err
}

// Lookup is Get that also reports whether the session came from the cache,
// so a caller can log in again when OpenBao rejects a cached token.
func (m *Sessions) Lookup(ctx context.Context, id Identity, jwt secret.String) (session *Session, cached bool, err error) {
	return m.get(ctx, id, jwt)
}

// Login logs in with jwt whatever the cache holds, and caches the new
// session. It is for a pod whose token the caller could not verify
// offline, and for retrying after OpenBao rejected a cached token.
func (m *Sessions) Login(ctx context.Context, id Identity, jwt secret.String) (*Session, error) {
	return m.login(ctx, id, jwt)
}

func (m *Sessions) get(ctx context.Context, id Identity, jwt secret.String) (session *Session, cached bool, err error) {
	if s := m.fresh(id); s != nil {
		return s, true, nil
	}

	result, err, _ := m.logins.Do(id.key(), func() (any, error) {
		if s := m.fresh(id); s != nil {
			return s, nil
		}
		return m.login(ctx, id, jwt)
	})
	if err != nil {
		return nil, false, err
	}
	return result.(*Session), false, nil
}

func (m *Sessions) login(ctx context.Context, id Identity, jwt secret.String) (*Session, error) {
	login, err := m.client.Login(ctx, id.Role, jwt)
	if err != nil {
		return nil, err
	}
	session, err := m.client.NewSession(login)
	if err != nil {
		return nil, err
	}
	m.store(id, session)
	return session, nil
}

// Forget drops the cached session of id, for example after OpenBao
// rejected its token.
func (m *Sessions) Forget(id Identity) {
	m.mu.Lock()
	defer m.mu.Unlock()

	delete(m.entries, id.key())
}

// Len returns the number of cached sessions.
func (m *Sessions) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()

	return len(m.entries)
}

// WithSession runs request with a session for id. When OpenBao rejects a
// cached token (revoked or expired early), it logs in once more and retries,
// so a stale cache never fails a publish on its own.
func (m *Sessions) WithSession(ctx context.Context, id Identity, jwt secret.String, request func(*Session) error) error {
	session, cached, err := m.get(ctx, id, jwt)
	if err != nil {
		return err
	}
	err = request(session)
	if !cached || !errors.Is(err, ErrPermissionDenied) {
		return err
	}

	m.Forget(id)
	session, loginErr := m.Get(ctx, id, jwt)
	if loginErr != nil {
		return fmt.Errorf("%w (login again after a rejected cached token: %w)", err, loginErr)
	}
	return request(session)
}

// Cached returns the cached session of id while its token is valid, even
// past the point where a publish would log in again, or nil. It serves
// requests that have no pod token at hand, such as revoking leases.
func (m *Sessions) Cached(id Identity) *Session {
	m.mu.Lock()
	defer m.mu.Unlock()

	entry, ok := m.entries[id.key()]
	if !ok {
		return nil
	}
	if !m.now().Before(entry.expires) {
		delete(m.entries, id.key())
		return nil
	}
	return entry.session
}

// Renewed returns a session of id for background work (lease renewal and
// rotation between publishes). A token past two thirds of its TTL is
// renewed first with renew-self. It returns an error wrapping ErrNoSession
// when no valid token is cached or the token cannot be renewed any more.
func (m *Sessions) Renewed(ctx context.Context, id Identity) (*Session, error) {
	m.mu.Lock()
	entry, ok := m.entries[id.key()]
	now := m.now()
	m.mu.Unlock()
	switch {
	case !ok || !now.Before(entry.expires):
		return nil, fmt.Errorf("%w: %s/%s (role %q): wait for the pod's next republish", ErrNoSession, id.Namespace, id.ServiceAccount, id.Role)
	case now.Before(entry.refreshAt):
		return entry.session, nil
	case !entry.session.login.Renewable:
		return entry.session, nil
	}

	ttl, err := entry.session.RenewSelf(ctx, entry.session.login.TTL)
	if err != nil {
		if errors.Is(err, ErrPermissionDenied) || errors.Is(err, ErrInvalidRequest) {
			m.Forget(id)
			return nil, fmt.Errorf("%w: %w", ErrNoSession, err)
		}
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	now = m.now()
	entry.refreshAt = now.Add(ttl * 2 / 3)
	entry.expires = now.Add(ttl)
	return entry.session, nil
}

func (m *Sessions) fresh(id Identity) *Session {
	m.mu.Lock()
	defer m.mu.Unlock()

	entry, ok := m.entries[id.key()]
	if !ok {
		return nil
	}
	now := m.now()
	if !now.Before(entry.expires) {
		delete(m.entries, id.key())
		return nil
	}
	if !now.Before(entry.refreshAt) {
		return nil
	}
	return entry.session
}

func (m *Sessions) store(id Identity, session *Session) {
	now := m.now()
	ttl := session.login.TTL
	if ttl <= 0 {
		// A token without TTL (root-like) is still re-checked hourly.
		ttl = time.Hour
	}

	m.mu.Lock()
	defer m.mu.Unlock()

	m.entries[id.key()] = &cachedSession{session: session, loggedIn: now, refreshAt: now.Add(ttl * 2 / 3), expires: now.Add(ttl)}
}
