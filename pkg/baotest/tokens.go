package baotest

import (
	"strings"
	"time"
)

// token is a service or batch token.
type token struct {
	id          string
	accessor    string
	parent      string // parent token ID; empty for orphans
	policies    []string
	meta        map[string]string
	displayName string
	path        string // the path that created it, e.g. "auth/jwt/login"
	entityID    string
	tokenType   string // "service" or "batch"
	renewable   bool
	numUses     int

	issued         time.Time
	creationTTL    time.Duration
	expire         time.Time // zero: never expires
	lastRenewal    time.Time
	explicitMaxTTL time.Duration
	period         time.Duration
	mountDefault   time.Duration
	mountMax       time.Duration

	// renewTTLs returns the backend TTL, max TTL and period for a renewal,
	// as the issuing auth method computes them (the role may have changed).
	renewTTLs func() (ttl, maxTTL, period time.Duration, err error)

	revoked bool
}

func (t *token) isRoot() bool {
	return len(t.policies) == 1 && t.policies[0] == "root"
}

// tokenSpec describes a token to issue.
type tokenSpec struct {
	policies       []string
	meta           map[string]string
	displayName    string
	path           string
	entityID       string
	parent         string
	tokenType      string
	renewable      bool
	numUses        int
	ttl            time.Duration
	maxTTL         time.Duration
	explicitMaxTTL time.Duration
	period         time.Duration
	mount          *mount
	renewTTLs      func() (ttl, maxTTL, period time.Duration, err error)
}

// issueTokenLocked creates a token from spec. Its TTL follows OpenBao's
// rules: the requested TTL or the mount default, capped by the role's max
// TTL, the explicit max TTL and the mount max. It returns the warnings
// OpenBao would add for capping.
func (s *Server) issueTokenLocked(spec tokenSpec, now time.Time) (*token, time.Duration, []string, error) {
	def, mountMax := spec.mount.leaseTTLs()
	ttl, warnings, err := calculateTTL(ttlInput{
		now: now, backendTTL: spec.ttl, period: spec.period, backendMax: spec.maxTTL,
		explicitMax: spec.explicitMaxTTL, mountDefault: def, mountMax: mountMax,
	})
	if err != nil {
		return nil, 0, nil, badRequest("%v", err)
	}

	t := &token{
		accessor:       newAccessor(),
		parent:         spec.parent,
		policies:       spec.policies,
		meta:           spec.meta,
		displayName:    spec.displayName,
		path:           spec.path,
		entityID:       spec.entityID,
		tokenType:      spec.tokenType,
		renewable:      spec.renewable && spec.tokenType != "batch",
		numUses:        spec.numUses,
		issued:         now,
		creationTTL:    ttl,
		expire:         now.Add(ttl),
		explicitMaxTTL: spec.explicitMaxTTL,
		period:         spec.period,
		mountDefault:   def,
		mountMax:       mountMax,
		renewTTLs:      spec.renewTTLs,
	}
	if t.tokenType == "batch" {
		t.id = newTokenID("b.")
	} else {
		t.id = newTokenID("s.")
	}
	s.storeTokenLocked(t)
	return t, ttl, warnings, nil
}

func (s *Server) storeTokenLocked(t *token) {
	s.tokens[t.id] = t
	s.byAcc[t.accessor] = t
}

// liveTokenLocked returns the token with id unless it is unknown, revoked
// or expired. An expired token is revoked on the spot.
func (s *Server) liveTokenLocked(id string, now time.Time) *token {
	t := s.tokens[id]
	if t == nil || t.revoked {
		return nil
	}
	if !t.expire.IsZero() && !now.Before(t.expire) {
		s.revokeTokenLocked(t, now)
		return nil
	}
	return t
}

// spendUseLocked counts one use of a limited-use token and revokes it after
// its last use. The current request still completes, as in OpenBao.
func (s *Server) spendUseLocked(t *token, now time.Time) {
	if t.numUses <= 0 {
		return
	}
	t.numUses--
	if t.numUses == 0 {
		s.revokeTokenLocked(t, now)
	}
}

// revokeTokenLocked revokes t, its child tokens and their leases.
func (s *Server) revokeTokenLocked(t *token, now time.Time) {
	if t.revoked {
		return
	}
	t.revoked = true
	for _, l := range s.leases {
		if l.tokenID == t.id {
			s.revokeLeaseLocked(l, now)
		}
	}
	for _, child := range s.tokens {
		if child.parent == t.id {
			s.revokeTokenLocked(child, now)
		}
	}
}

// revokeTokensByPathLocked revokes every token created below prefix, used
// when an auth method is disabled.
func (s *Server) revokeTokensByPathLocked(prefix string, now time.Time) {
	for _, t := range s.tokens {
		if strings.HasPrefix(t.path, prefix) {
			s.revokeTokenLocked(t, now)
		}
	}
}

// expireLocked revokes the tokens and leases whose time is up, as OpenBao's
// expiration manager does in the background.
func (s *Server) expireLocked(now time.Time) {
	for _, t := range s.tokens {
		if !t.revoked && !t.expire.IsZero() && !now.Before(t.expire) {
			s.revokeTokenLocked(t, now)
		}
	}
	for _, l := range s.leases {
		if !l.revoked && !now.Before(l.expire) {
			s.revokeLeaseLocked(l, now)
		}
	}
}

// renewTokenLocked extends t by increment, recomputing the TTL from the
// issuing auth method's current settings.
func (s *Server) renewTokenLocked(t *token, increment time.Duration, now time.Time) (time.Duration, []string, error) {
	switch {
	case t.tokenType == "batch":
		return 0, nil, badRequest("batch tokens cannot be renewed")
	case t.expire.IsZero() || !t.renewable:
		return 0, nil, badRequest("lease is not renewable")
	}

	ttl, maxTTL, period := t.creationTTL, time.Duration(0), t.period
	if t.renewTTLs != nil {
		var err error
		if ttl, maxTTL, period, err = t.renewTTLs(); err != nil {
			return 0, nil, internalError("%v", err)
		}
	}

	newTTL, warnings, err := calculateTTL(ttlInput{
		now: now, increment: increment, backendTTL: ttl, period: period, backendMax: maxTTL,
		explicitMax: t.explicitMaxTTL, mountDefault: t.mountDefault, mountMax: t.mountMax, start: t.issued,
	})
	if err != nil {
		return 0, nil, badRequest("%v", err)
	}
	t.expire = now.Add(newTTL)
	t.lastRenewal = now
	return newTTL, warnings, nil
}

// sanitizePolicies lowercases, de-duplicates and sorts names, and adds
// "default" when addDefault is true. A list containing "root" becomes just
// root.
func sanitizePolicies(names []string, addDefault bool) []string {
	set := map[string]bool{}
	for _, n := range names {
		if n = strings.ToLower(strings.TrimSpace(n)); n != "" {
			set[n] = true
		}
	}
	if set["root"] {
		return []string{"root"}
	}
	if addDefault {
		set["default"] = true
	}
	return sortedKeys(set)
}

// tokenLookupData renders t as auth/token/lookup-self returns it.
func tokenLookupData(t *token, now time.Time) map[string]any {
	data := map[string]any{
		"accessor":         t.accessor,
		"creation_time":    t.issued.Unix(),
		"creation_ttl":     seconds(t.creationTTL),
		"display_name":     t.displayName,
		"entity_id":        t.entityID,
		"expire_time":      nil,
		"explicit_max_ttl": seconds(t.explicitMaxTTL),
		"id":               t.id,
		"issue_time":       formatTime(t.issued),
		"meta":             nilIfEmpty(t.meta),
		"num_uses":         t.numUses,
		"orphan":           t.parent == "",
		"path":             t.path,
		"policies":         t.policies,
		"renewable":        t.renewable && !t.expire.IsZero(),
		"ttl":              int64(0),
		"type":             t.tokenType,
	}
	if t.period > 0 {
		data["period"] = seconds(t.period)
	}
	if !t.lastRenewal.IsZero() {
		data["last_renewal_time"] = t.lastRenewal.Unix()
		data["last_renewal"] = formatTime(t.lastRenewal)
	}
	if !t.expire.IsZero() {
		data["expire_time"] = formatTime(t.expire)
		data["ttl"] = int64(t.expire.Sub(now.Round(time.Second)) / time.Second)
	}
	return data
}

// authBlock renders t as the "auth" object of a login, create or renew
// response.
func authBlock(t *token, ttl time.Duration) map[string]any {
	return map[string]any{
		"client_token":    t.id,
		"accessor":        t.accessor,
		"policies":        t.policies,
		"token_policies":  t.policies,
		"metadata":        nilIfEmpty(t.meta),
		"lease_duration":  seconds(ttl),
		"renewable":       t.renewable,
		"entity_id":       t.entityID,
		"token_type":      t.tokenType,
		"orphan":          t.parent == "",
		"mfa_requirement": nil,
		"num_uses":        t.numUses,
	}
}

func nilIfEmpty(m map[string]string) any {
	if len(m) == 0 {
		return nil
	}
	return m
}
