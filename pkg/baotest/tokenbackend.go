package baotest

import (
	"maps"
	"time"
)

// tokenBackend serves auth/token/.
type tokenBackend struct {
	s *Server
}

func (b tokenBackend) route(rest string) *route {
	s := b.s
	switch rest {
	case "lookup-self":
		return newRoute().read(OpTokenLookup, s.handleLookupSelf).write(OpTokenLookup, s.handleLookupSelf)
	case "renew-self":
		return newRoute().write(OpTokenRenew, s.handleRenewSelf)
	case "revoke-self":
		return newRoute().write(OpTokenRevoke, s.handleRevokeSelf)
	case "lookup":
		return newRoute().read(OpTokenLookup, s.handleLookup).write(OpTokenLookup, s.handleLookup)
	case "renew":
		return newRoute().write(OpTokenRenew, s.handleRenew)
	case "revoke":
		return newRoute().write(OpTokenRevoke, s.handleRevoke)
	case "create":
		return newRoute().write(OpTokenCreate, func(r *request) (*response, error) { return s.handleCreate(r, false) })
	case "create-orphan":
		return newRoute().write(OpTokenCreate, func(r *request) (*response, error) { return s.handleCreate(r, true) })
	}
	return nil
}

func (s *Server) handleLookupSelf(r *request) (*response, error) {
	return &response{data: tokenLookupData(r.token, r.now)}, nil
}

func (s *Server) handleLookup(r *request) (*response, error) {
	id, err := fieldString(r.data, "token")
	if err != nil {
		return nil, err
	}
	if id == "" {
		return nil, badRequest("missing token ID")
	}
	t := s.liveTokenLocked(id, r.now)
	if t == nil {
		return nil, forbidden("bad token")
	}
	return &response{data: tokenLookupData(t, r.now)}, nil
}

func (s *Server) handleRenewSelf(r *request) (*response, error) {
	return s.renewResponse(r, r.token)
}

func (s *Server) handleRenew(r *request) (*response, error) {
	id, err := fieldString(r.data, "token")
	if err != nil {
		return nil, err
	}
	if id == "" {
		return nil, badRequest("missing token ID")
	}
	t := s.liveTokenLocked(id, r.now)
	if t == nil {
		return nil, badRequest("token not found")
	}
	return s.renewResponse(r, t)
}

// renewResponse renews t by the request's increment (seconds).
func (s *Server) renewResponse(r *request, t *token) (*response, error) {
	increment, _, err := fieldDuration(r.data, "increment")
	if err != nil {
		return nil, err
	}
	ttl, warnings, err := s.renewTokenLocked(t, increment, r.now)
	if err != nil {
		return nil, err
	}
	return &response{auth: authBlock(t, ttl), warnings: warnings}, nil
}

func (s *Server) handleRevokeSelf(r *request) (*response, error) {
	s.revokeTokenLocked(r.token, r.now)
	return nil, nil
}

func (s *Server) handleRevoke(r *request) (*response, error) {
	id, err := fieldString(r.data, "token")
	if err != nil {
		return nil, err
	}
	if id == "" {
		return nil, badRequest("missing token ID")
	}
	if t := s.tokens[id]; t != nil {
		s.revokeTokenLocked(t, r.now)
	}
	return nil, nil
}

// handleCreate creates a child (or orphan) token of the caller. A non-root
// caller may only pass on policies it has itself.
func (s *Server) handleCreate(r *request, orphan bool) (*response, error) {
	spec, err := s.createSpec(r)
	if err != nil {
		return nil, err
	}
	noParent, err := fieldBool(r.data, "no_parent", false)
	if err != nil {
		return nil, err
	}
	orphan = orphan || noParent
	if err := checkChildToken(r.token, spec.policies, orphan); err != nil {
		return nil, err
	}
	if !orphan {
		spec.parent = r.token.id
	}

	t, ttl, warnings, err := s.issueTokenLocked(spec, r.now)
	if err != nil {
		return nil, err
	}
	return &response{auth: authBlock(t, ttl), warnings: warnings}, nil
}

// createSpec reads the token parameters of auth/token/create.
func (s *Server) createSpec(r *request) (tokenSpec, error) {
	spec := tokenSpec{path: "auth/token/create", mount: s.auths["token/"], tokenType: "service"}

	policies, _, err := fieldStrings(r.data, "policies")
	if err != nil {
		return spec, err
	}
	noDefault, err := fieldBool(r.data, "no_default_policy", false)
	if err != nil {
		return spec, err
	}
	if len(policies) == 0 && r.token.isRoot() {
		policies = []string{"root"}
	} else if len(policies) == 0 {
		policies = r.token.policies
	}
	spec.policies = sanitizePolicies(policies, !noDefault)

	if spec.renewable, err = fieldBool(r.data, "renewable", true); err != nil {
		return spec, err
	}
	if spec.numUses, err = fieldInt(r.data, "num_uses", 0); err != nil {
		return spec, err
	}
	meta, _, err := fieldStringMap(r.data, "meta")
	if err != nil {
		return spec, err
	}
	spec.meta = maps.Clone(meta)

	name, err := fieldString(r.data, "display_name")
	if err != nil {
		return spec, err
	}
	spec.displayName = "token"
	if name != "" {
		spec.displayName = "token-" + name
	}

	if err := readTokenDurations(r.data, &spec); err != nil {
		return spec, err
	}
	if t, _ := fieldString(r.data, "type"); t == "batch" {
		spec.tokenType = "batch"
	}
	return spec, nil
}

func readTokenDurations(data map[string]any, spec *tokenSpec) error {
	for key, dst := range map[string]*time.Duration{
		"ttl":              &spec.ttl,
		"explicit_max_ttl": &spec.explicitMaxTTL,
		"period":           &spec.period,
	} {
		d, _, err := fieldDuration(data, key)
		if err != nil {
			return err
		}
		*dst = d
	}
	return nil
}

// checkChildToken enforces OpenBao's rules for non-root parents.
func checkChildToken(parent *token, policies []string, orphan bool) error {
	if parent.isRoot() {
		return nil
	}
	if orphan {
		return forbidden("root or sudo privileges required to create orphan token")
	}
	have := map[string]bool{"default": true}
	for _, p := range parent.policies {
		have[p] = true
	}
	for _, p := range policies {
		if !have[p] {
			return badRequest("child policies must be subset of parent")
		}
	}
	return nil
}
