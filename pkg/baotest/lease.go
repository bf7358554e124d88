package baotest

import (
	"net/http"
	"strings"
	"time"
)

// lease is a lease on a dynamic secret.
type lease struct {
	id           string
	path         string // request path that issued it, e.g. "database/creds/app"
	mountPath    string
	tokenID      string // revoking this token revokes the lease
	issued       time.Time
	expire       time.Time
	lastRenewal  time.Time
	renewable    bool
	revoked      bool
	mountDefault time.Duration
	mountMax     time.Duration

	// renewTTLs returns the backend TTL and max TTL for a renewal, read from
	// the engine's current role; an error fails the renewal.
	renewTTLs func() (ttl, maxTTL time.Duration, err error)
	// onRevoke lets the engine forget the credential.
	onRevoke func()
}

// LeaseInfo describes a lease for test assertions.
type LeaseInfo struct {
	ID          string
	Path        string
	IssueTime   time.Time
	ExpireTime  time.Time
	LastRenewal time.Time // zero until renewed
	Renewable   bool
	// Revoked is true once the lease was revoked through the API, expired,
	// or went with its token or mount.
	Revoked bool
}

// leaseSpec describes a lease to create for a dynamic secret.
type leaseSpec struct {
	mount     *mount
	path      string
	token     *token
	ttl       time.Duration
	maxTTL    time.Duration
	renewable bool
	renewTTLs func() (time.Duration, time.Duration, error)
	onRevoke  func()
}

// newLeaseLocked creates a lease whose TTL follows OpenBao's rules and
// returns it with its TTL.
func (s *Server) newLeaseLocked(spec leaseSpec, now time.Time) (*lease, time.Duration, error) {
	def, mountMax := spec.mount.leaseTTLs()
	ttl, _, err := calculateTTL(ttlInput{
		now: now, backendTTL: spec.ttl, backendMax: spec.maxTTL, mountDefault: def, mountMax: mountMax,
	})
	if err != nil {
		return nil, 0, internalError("%v", err)
	}

	l := &lease{
		id:           spec.path + "/" + randomString(24, base62),
		path:         spec.path,
		mountPath:    spec.mount.path,
		tokenID:      spec.token.id,
		issued:       now,
		expire:       now.Add(ttl),
		renewable:    spec.renewable,
		mountDefault: def,
		mountMax:     mountMax,
		renewTTLs:    spec.renewTTLs,
		onRevoke:     spec.onRevoke,
	}
	s.leases[l.id] = l
	return l, ttl, nil
}

func (s *Server) revokeLeaseLocked(l *lease, _ time.Time) {
	if l.revoked {
		return
	}
	l.revoked = true
	if l.onRevoke != nil {
		l.onRevoke()
	}
}

// revokeLeasesByPrefixLocked revokes every lease below a mount path.
func (s *Server) revokeLeasesByPrefixLocked(prefix string, now time.Time) {
	for _, l := range s.leases {
		if strings.HasPrefix(l.id, prefix) {
			s.revokeLeaseLocked(l, now)
		}
	}
}

// activeLeaseLocked returns the lease with id unless it is unknown or gone.
func (s *Server) activeLeaseLocked(id string) *lease {
	l := s.leases[id]
	if l == nil || l.revoked {
		return nil
	}
	return l
}

// leaseRoute resolves a path below sys/leases/.
func (s *Server) leaseRoute(rest string) *route {
	switch {
	case rest == "renew" || strings.HasPrefix(rest, "renew/"):
		id := strings.TrimPrefix(strings.TrimPrefix(rest, "renew"), "/")
		return newRoute().write(OpLeaseRenew, func(r *request) (*response, error) { return s.handleLeaseRenew(r, id) })
	case rest == "revoke" || strings.HasPrefix(rest, "revoke/"):
		id := strings.TrimPrefix(strings.TrimPrefix(rest, "revoke"), "/")
		return newRoute().write(OpLeaseRevoke, func(r *request) (*response, error) { return s.handleLeaseRevoke(r, id) })
	case rest == "lookup":
		return newRoute().write(OpLeaseLookup, s.handleLeaseLookup)
	}
	return nil
}

// leaseID returns lease_id from the body, else the ID in the URL.
func leaseID(r *request, urlID string) (string, error) {
	id, err := fieldString(r.data, "lease_id")
	if err != nil {
		return "", err
	}
	if id == "" {
		id = urlID
	}
	if id == "" {
		return "", badRequest("lease_id must be specified")
	}
	return id, nil
}

func (s *Server) handleLeaseRenew(r *request, urlID string) (*response, error) {
	id, err := leaseID(r, urlID)
	if err != nil {
		return nil, err
	}
	increment, _, err := fieldDuration(r.data, "increment")
	if err != nil {
		return nil, err
	}
	// NOTE: OpenBao revokes expired leases, and the leases of a revoked
	// token, a moment later; renewing in between fails with "lease
	// expired". This server revokes at once, so it always returns "lease not
	// found".
	l := s.activeLeaseLocked(id)
	if l == nil {
		return nil, badRequest("lease not found")
	}
	if !l.renewable {
		return nil, badRequest("lease is not renewable")
	}

	ttl, maxTTL, err := l.renewTTLs()
	if err != nil {
		return nil, badRequest("%v", err)
	}
	newTTL, warnings, err := calculateTTL(ttlInput{
		now: r.now, increment: increment, backendTTL: ttl, backendMax: maxTTL,
		mountDefault: l.mountDefault, mountMax: l.mountMax, start: l.issued,
	})
	if err != nil {
		return nil, badRequest("%v", err)
	}

	l.expire = r.now.Add(newTTL)
	l.lastRenewal = r.now
	return &response{
		leaseID:       l.id,
		renewable:     true,
		leaseDuration: seconds(newTTL),
		warnings:      warnings,
	}, nil
}

// handleLeaseRevoke revokes a lease. Unknown leases succeed too, as in
// OpenBao. With sync=false it returns 202, as OpenBao's lazy revocation does.
func (s *Server) handleLeaseRevoke(r *request, urlID string) (*response, error) {
	id, err := leaseID(r, urlID)
	if err != nil {
		return nil, err
	}
	sync, err := fieldBool(r.data, "sync", true)
	if err != nil {
		return nil, err
	}
	if l := s.activeLeaseLocked(id); l != nil {
		s.revokeLeaseLocked(l, r.now)
	}
	if !sync {
		return &response{status: http.StatusAccepted}, nil
	}
	return nil, nil
}

func (s *Server) handleLeaseLookup(r *request) (*response, error) {
	id, err := leaseID(r, "")
	if err != nil {
		return nil, err
	}
	l := s.activeLeaseLocked(id)
	if l == nil {
		return nil, badRequest("invalid lease")
	}

	var lastRenewal any
	if !l.lastRenewal.IsZero() {
		lastRenewal = formatTime(l.lastRenewal)
	}
	return &response{data: map[string]any{
		"id":           l.id,
		"issue_time":   formatTime(l.issued),
		"expire_time":  formatTime(l.expire),
		"last_renewal": lastRenewal,
		"ttl":          int64(l.expire.Sub(r.now.Round(time.Second)) / time.Second),
		"path":         l.path,
		"renewable":    l.renewable,
	}}, nil
}

// LeaseCount returns the number of active leases: not revoked, not
// expired, and whose token is still valid.
func (s *Server) LeaseCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked(s.now())
	n := 0
	for _, l := range s.leases {
		if !l.revoked {
			n++
		}
	}
	return n
}

// Revoked reports whether the lease was revoked (through the API, by
// expiry, or with its token or mount). It is false for unknown IDs.
func (s *Server) Revoked(leaseID string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked(s.now())
	l := s.leases[leaseID]
	return l != nil && l.revoked
}

// Lease returns the state of a lease; false for unknown IDs.
func (s *Server) Lease(leaseID string) (LeaseInfo, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked(s.now())
	l := s.leases[leaseID]
	if l == nil {
		return LeaseInfo{}, false
	}
	return LeaseInfo{
		ID: l.id, Path: l.path, IssueTime: l.issued, ExpireTime: l.expire,
		LastRenewal: l.lastRenewal, Renewable: l.renewable, Revoked: l.revoked,
	}, true
}

// TokenCount returns the number of valid tokens other than the root token.
func (s *Server) TokenCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked(s.now())
	n := 0
	for _, t := range s.tokens {
		if !t.revoked && t.id != s.rootToken {
			n++
		}
	}
	return n
}
