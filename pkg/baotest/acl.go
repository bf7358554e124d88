package baotest

import (
	"sort"
	"strings"
	"time"
)

// capSet is a set of ACL capabilities.
type capSet uint32

const (
	capDeny capSet = 1 << iota
	capCreate
	capRead
	capUpdate
	capDelete
	capList
	capSudo
	capPatch
	capScan
)

var capabilityNames = map[string]capSet{
	"deny":   capDeny,
	"create": capCreate,
	"read":   capRead,
	"update": capUpdate,
	"delete": capDelete,
	"list":   capList,
	"sudo":   capSudo,
	"patch":  capPatch,
	"scan":   capScan,
}

// allows reports whether the set grants op.
func (c capSet) allows(op operation) bool {
	if c&capDeny != 0 {
		return false
	}
	need := map[operation]capSet{
		opRead: capRead, opList: capList, opCreate: capCreate,
		opUpdate: capUpdate, opDelete: capDelete, opPatch: capPatch,
	}[op]
	return need != 0 && c&need != 0
}

// names lists the capabilities in the set, or "deny" for none, as
// sys/capabilities-self reports them.
func (c capSet) names() []string {
	if c == 0 || c&capDeny != 0 {
		return []string{"deny"}
	}
	var out []string
	for name, bit := range capabilityNames {
		if c&bit != 0 {
			out = append(out, name)
		}
	}
	sort.Strings(out)
	return out
}

// acl is the merged view of a token's policies, split the way OpenBao
// matches paths: exact paths, glob prefixes (trailing "*") and paths with
// "+" segment wildcards.
type acl struct {
	exact    map[string]capSet
	prefix   map[string]capSet
	wildcard map[string]capSet // keys keep their trailing "*", if any
}

func newACL() *acl {
	return &acl{exact: map[string]capSet{}, prefix: map[string]capSet{}, wildcard: map[string]capSet{}}
}

// add merges one rule. Capabilities of equal paths add up, except that a
// deny anywhere wins.
func (a *acl) add(path string, caps capSet) {
	table := a.exact
	switch {
	case path == "+" || strings.Contains(path, "/+") || strings.HasPrefix(path, "+/"):
		table = a.wildcard
	case strings.HasSuffix(path, "*"):
		table, path = a.prefix, strings.TrimSuffix(path, "*")
	}

	old, ok := table[path]
	switch {
	case !ok:
		table[path] = caps
	case old&capDeny != 0 || caps&capDeny != 0:
		table[path] = capDeny
	default:
		table[path] = old | caps
	}
}

// capabilities returns the capabilities of the most specific rule that
// matches path. Lists also try the path without its trailing slash.
func (a *acl) capabilities(path string, op operation) capSet {
	if caps, ok := a.exact[path]; ok {
		return caps
	}
	listing := op == opList
	if listing {
		if caps, ok := a.exact[strings.TrimSuffix(path, "/")]; ok {
			return caps
		}
	}
	if caps, ok := a.nonExact(path); ok {
		return caps
	}
	if listing && strings.HasSuffix(path, "/") {
		if caps, ok := a.nonExact(strings.TrimSuffix(path, "/")); ok {
			return caps
		}
	}
	return 0
}

// candidate is a matching glob or wildcard rule, ranked by specificity.
type candidate struct {
	firstWildcard int // index of the first "+" or "*"
	isPrefix      bool
	wildcards     int
	pattern       string
	caps          capSet
}

// lessSpecific orders candidates as OpenBao does: a later first wildcard,
// then an exact ending over a glob, then fewer "+" segments, then a longer
// pattern, then the lexically greater pattern wins.
func lessSpecific(a, b candidate) bool {
	switch {
	case a.firstWildcard != b.firstWildcard:
		return a.firstWildcard < b.firstWildcard
	case a.isPrefix != b.isPrefix:
		return a.isPrefix
	case a.wildcards != b.wildcards:
		return a.wildcards > b.wildcards
	case len(a.pattern) != len(b.pattern):
		return len(a.pattern) < len(b.pattern)
	default:
		return a.pattern < b.pattern
	}
}

// nonExact finds the best glob or segment-wildcard rule for path.
func (a *acl) nonExact(path string) (capSet, bool) {
	var best *candidate
	consider := func(c candidate) {
		if best == nil || lessSpecific(*best, c) {
			best = &c
		}
	}

	longest, found := "", false
	for p := range a.prefix {
		if strings.HasPrefix(path, p) && (!found || len(p) > len(longest)) {
			longest, found = p, true
		}
	}
	if found {
		consider(candidate{firstWildcard: len(longest), isPrefix: true, pattern: longest, caps: a.prefix[longest]})
	}

	parts := strings.Split(path, "/")
	for pattern, caps := range a.wildcard {
		if c, ok := matchWildcard(pattern, parts); ok {
			c.caps = caps
			consider(c)
		}
	}
	if best == nil {
		return 0, false
	}
	return best.caps, true
}

// matchWildcard matches a pattern with "+" segments (and maybe a trailing
// "*") against the segments of a path.
func matchWildcard(pattern string, parts []string) (candidate, bool) {
	c := candidate{firstWildcard: strings.Index(pattern, "+")}
	body := pattern
	if strings.HasSuffix(body, "*") {
		c.isPrefix = true
		body = strings.TrimSuffix(body, "*")
	}
	c.pattern = body

	segments := strings.Split(body, "/")
	if len(parts) < len(segments) || (!c.isPrefix && len(parts) != len(segments)) {
		return c, false
	}
	for i, seg := range segments {
		switch {
		case seg == "+":
			c.wildcards++
		case seg == parts[i]:
		case c.isPrefix && i == len(segments)-1 && strings.HasPrefix(parts[i], seg):
		default:
			return c, false
		}
	}
	return c, true
}

// aclForTokenLocked builds the ACL of t's policies, rendering templated
// paths with t's entity. A path whose template cannot be rendered is left
// out, as in OpenBao.
func (s *Server) aclForTokenLocked(t *token) *acl {
	a := newACL()
	ent := s.entities[t.entityID]
	now := s.now()
	for _, name := range t.policies {
		p := s.policies[name]
		if p == nil {
			continue
		}
		for _, rule := range p.rules {
			if policyExpired(rule, now) {
				continue
			}
			path := rule.path
			if p.templated {
				rendered, err := renderTemplate(path, ent, p.allowSlashes, p.allowWildcards)
				if err != nil {
					continue
				}
				path = strings.TrimPrefix(rendered, "/")
			}
			a.add(path, rule.caps)
		}
	}
	return a
}

// policyExpired reports whether a rule's expiration has passed.
func policyExpired(rule pathRule, now time.Time) bool {
	return !rule.expiration.IsZero() && now.After(rule.expiration)
}
