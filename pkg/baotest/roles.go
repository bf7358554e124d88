package baotest

import (
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// tokenParams are the token_* fields every auth role has (OpenBao's
// tokenutil), with the legacy names policies, ttl, max_ttl and period.
type tokenParams struct {
	policies        []string
	ttl             time.Duration
	maxTTL          time.Duration
	explicitMaxTTL  time.Duration
	period          time.Duration
	tokenType       string // "default", "service" or "batch"
	noDefaultPolicy bool
	numUses         int
}

// parseTokenParams updates p from a role write.
func parseTokenParams(data map[string]any, p *tokenParams) error {
	if err := parseTokenPolicies(data, p); err != nil {
		return err
	}
	for _, f := range []struct {
		names []string
		dst   *time.Duration
	}{
		{[]string{"token_ttl", "ttl"}, &p.ttl},
		{[]string{"token_max_ttl", "max_ttl"}, &p.maxTTL},
		{[]string{"token_explicit_max_ttl"}, &p.explicitMaxTTL},
		{[]string{"token_period", "period"}, &p.period},
	} {
		for _, name := range f.names {
			if d, ok, err := fieldDuration(data, name); err != nil {
				return err
			} else if ok {
				*f.dst = d
				break
			}
		}
	}
	return parseTokenOptions(data, p)
}

func parseTokenPolicies(data map[string]any, p *tokenParams) error {
	for _, name := range []string{"token_policies", "policies"} {
		if list, ok, err := fieldStrings(data, name); err != nil {
			return err
		} else if ok {
			p.policies = list
			return nil
		}
	}
	return nil
}

func parseTokenOptions(data map[string]any, p *tokenParams) error {
	if _, ok := data["token_bound_cidrs"]; ok {
		return unsupportedByTestServer("token_bound_cidrs")
	}
	if t, err := fieldString(data, "token_type"); err != nil {
		return err
	} else if t != "" {
		switch t {
		case "default", "service", "default-service":
			p.tokenType = "service"
		case "batch", "default-batch":
			p.tokenType = "batch"
		default:
			return badRequest("invalid 'token_type' value %q", t)
		}
	}

	var err error
	if p.noDefaultPolicy, err = fieldBool(data, "token_no_default_policy", p.noDefaultPolicy); err != nil {
		return err
	}
	if p.numUses, err = fieldInt(data, "token_num_uses", p.numUses); err != nil {
		return err
	}
	if p.numUses < 0 {
		return badRequest("'token_num_uses' cannot be negative")
	}
	return nil
}

// fields renders the token parameters for a role read.
func (p tokenParams) fields() map[string]any {
	tokenType := p.tokenType
	if tokenType == "" {
		tokenType = "default"
	}
	policies := p.policies
	if policies == nil {
		policies = []string{}
	}
	return map[string]any{
		"token_policies":          policies,
		"token_ttl":               seconds(p.ttl),
		"token_max_ttl":           seconds(p.maxTTL),
		"token_explicit_max_ttl":  seconds(p.explicitMaxTTL),
		"token_period":            seconds(p.period),
		"token_type":              tokenType,
		"token_no_default_policy": p.noDefaultPolicy,
		"token_num_uses":          p.numUses,
		"token_bound_cidrs":       []string{},
	}
}

// loginToken describes the token to issue after a successful login.
type loginToken struct {
	mount       *mount
	params      tokenParams
	displayName string
	entity      *entity
	metadata    map[string]string
	renewTTLs   func() (ttl, maxTTL, period time.Duration, err error)
}

// issueLoginTokenLocked creates an orphan token for a login and returns the
// login response.
func (s *Server) issueLoginTokenLocked(lt loginToken, now time.Time) (*response, error) {
	tokenType := lt.params.tokenType
	if tokenType == "" {
		tokenType = "service"
	}
	spec := tokenSpec{
		policies:       sanitizePolicies(lt.params.policies, !lt.params.noDefaultPolicy),
		meta:           lt.metadata,
		displayName:    strings.ReplaceAll(lt.mount.path, "/", "-") + lt.displayName,
		path:           "auth/" + lt.mount.path + "login",
		entityID:       lt.entity.id,
		tokenType:      tokenType,
		renewable:      true,
		numUses:        lt.params.numUses,
		ttl:            lt.params.ttl,
		maxTTL:         lt.params.maxTTL,
		explicitMaxTTL: lt.params.explicitMaxTTL,
		period:         lt.params.period,
		mount:          lt.mount,
		renewTTLs:      lt.renewTTLs,
	}
	t, ttl, warnings, err := s.issueTokenLocked(spec, now)
	if err != nil {
		return nil, err
	}
	return &response{auth: authBlock(t, ttl), warnings: warnings}, nil
}

// checkTokenTTLs rejects a TTL above the max TTL.
func checkTokenTTLs(p tokenParams, message string) error {
	if p.maxTTL > 0 && p.ttl > p.maxTTL {
		return badRequest("%s", message)
	}
	return nil
}

// normalizeList turns a claim or bound-claim value into a list: strings,
// booleans and numbers become one-item lists.
func normalizeList(raw any) ([]any, bool) {
	switch v := raw.(type) {
	case []any:
		return v, true
	case string, bool, json.Number:
		return []any{v}, true
	}
	return nil, false
}

// matchBoundClaims checks every bound claim against the token's claims.
func matchBoundClaims(bound, claims map[string]any, useGlobs bool) error {
	for _, name := range sortedKeys(bound) {
		actual := claimValue(claims, name)
		if actual == nil {
			return fmt.Errorf("claim %q is missing", name)
		}
		actualValues, ok := normalizeList(actual)
		if !ok {
			return fmt.Errorf("received claim is not a string, bool, int or list: %v", actual)
		}
		wantValues, ok := normalizeList(bound[name])
		if !ok {
			return fmt.Errorf("bound claim is not a string, bool, int or list: %v", bound[name])
		}
		if !anyClaimMatches(wantValues, actualValues, useGlobs) {
			return fmt.Errorf("claim %q does not match any associated bound claim values", name)
		}
	}
	return nil
}

func anyClaimMatches(want, actual []any, useGlobs bool) bool {
	for _, w := range want {
		for _, a := range actual {
			if !useGlobs {
				if w == a {
					return true
				}
				continue
			}
			ws, wOK := w.(string)
			as, aOK := a.(string)
			if wOK && aOK && globMatch(ws, as) {
				return true
			}
		}
	}
	return false
}

// globMatch matches s against a pattern where "*" stands for any run of
// characters, slashes included.
func globMatch(pattern, s string) bool {
	parts := strings.Split(pattern, "*")
	if len(parts) == 1 {
		return pattern == s
	}
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	for _, mid := range parts[1 : len(parts)-1] {
		i := strings.Index(s, mid)
		if i < 0 {
			return false
		}
		s = s[i+len(mid):]
	}
	return strings.HasSuffix(s, parts[len(parts)-1])
}

// globListContains reports whether any pattern of list matches s.
func globListContains(list []string, s string) bool {
	for _, pattern := range list {
		if globMatch(pattern, s) {
			return true
		}
	}
	return false
}
