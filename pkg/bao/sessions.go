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

// Sessions caches one Session per Identity and logs in again when the token
// nears expiry, so N pods of one service account on a node cost one login
// per token lifetime. Concurrent logins for one identity are made once.
//
// NOTE: a cached token is handed to a new pod after the caller has checked
// that pod's service-account token claims (namespace, service account,
// audience, expiry). Signature verification against the cluster's keys is
// not done here.
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
	expires  time.Time
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

func (m *Sessions) get(ctx context.Context, id Identity, jwt secret.String) (session *Session, cached bool, err error) {
	if s := m.cached(id); s != nil {
		return s, true, nil
	}

	result, err, _ := m.logins.Do(id.key(), func() (any, error) {
		if s := m.cached(id); s != nil {
			return s, nil
		}
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
	})
	if err != nil {
		return nil, false, err
	}
	return result.(*Session), false, nil
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

func (m *Sessions) cached(id Identity) *Session {
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

func (m *Sessions) store(id Identity, session *Session) {
	now := m.now()
	ttl := session.login.TTL
	if ttl <= 0 {
		// A token without TTL (root-like) is still re-checked hourly.
		ttl = time.Hour
	}

	m.mu.Lock()
	defer m.mu.Unlock()

	m.entries[id.key()] = &cachedSession{session: session, loggedIn: now, expires: now.Add(ttl * 2 / 3)}
}

// Cached returns the cached session of id, or nil.
func (m *Sessions) Cached(id Identity) *Session {
	return m.cached(id)
}
