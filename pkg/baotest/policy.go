package baotest

import (
	"fmt"
	"strings"
	"time"

	"github.com/hashicorp/hcl"
	"github.com/hashicorp/hcl/hcl/ast"
)

// policy is a stored ACL policy. Templated paths are rendered per request
// with the caller's identity.
type policy struct {
	name           string
	raw            string
	rules          []pathRule
	templated      bool
	allowSlashes   bool // allow_slashes_in_identity_templates
	allowWildcards bool // allow_wildcards_in_identity_templates
	version        int
	modified       time.Time
}

// pathRule is one `path "..." { ... }` block.
type pathRule struct {
	path       string // as written, templates included
	caps       capSet
	expiration time.Time
}

// defaultPolicyHCL grants what OpenBao's built-in "default" policy grants
// that matters to a workload: managing its own token and looking up and
// renewing leases by ID.
const defaultPolicyHCL = `
path "auth/token/lookup-self"       { capabilities = ["read"] }
path "auth/token/renew-self"        { capabilities = ["update"] }
path "auth/token/revoke-self"       { capabilities = ["update"] }
path "sys/capabilities-self"        { capabilities = ["update"] }
path "sys/leases/renew"             { capabilities = ["update"] }
path "sys/leases/lookup"            { capabilities = ["update"] }
path "sys/internal/ui/resultant-acl" { capabilities = ["read"] }
path "sys/wrapping/wrap"            { capabilities = ["update"] }
path "sys/wrapping/lookup"          { capabilities = ["update"] }
path "sys/wrapping/unwrap"          { capabilities = ["update"] }
path "sys/tools/hash"               { capabilities = ["update"] }
path "sys/tools/hash/*"             { capabilities = ["update"] }
path "cubbyhole/*"                  { capabilities = ["create", "read", "update", "delete", "list"] }
path "identity/entity/id/{{identity.entity.id}}"     { capabilities = ["read"] }
path "identity/entity/name/{{identity.entity.name}}" { capabilities = ["read"] }
path "identity/oidc/provider/+/authorize" { capabilities = ["read", "update"] }
`

// Parameters of path blocks that OpenBao accepts and this server does not
// enforce. A policy using them is rejected rather than silently loosened.
var unsupportedPathKeys = map[string]bool{
	"allowed_parameters":                  true,
	"denied_parameters":                   true,
	"required_parameters":                 true,
	"min_wrapping_ttl":                    true,
	"max_wrapping_ttl":                    true,
	"mfa_methods":                         true,
	"pagination_limit":                    true,
	"list_scan_response_keys_filter_path": true,
}

// parsePolicy parses HCL (or JSON) policy text.
func parsePolicy(name, raw string) (*policy, error) {
	root, err := hcl.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("failed to parse policy: %w", err)
	}
	list, ok := root.Node.(*ast.ObjectList)
	if !ok {
		return nil, fmt.Errorf("failed to parse policy: does not contain a root object")
	}
	if err := checkKeys(list, map[string]bool{"name": true, "path": true}); err != nil {
		return nil, fmt.Errorf("failed to parse policy: %w", err)
	}

	p := &policy{name: name, raw: raw}
	for _, item := range list.Filter("path").Items {
		rule, templated, err := parsePathRule(item)
		if err != nil {
			return nil, fmt.Errorf("failed to parse policy: %w", err)
		}
		p.templated = p.templated || templated
		p.rules = append(p.rules, rule)
	}
	return p, nil
}

// pathBody is the decoded content of a path block.
type pathBody struct {
	Comment      string   `hcl:"comment"`
	Policy       string   `hcl:"policy"`
	Capabilities []string `hcl:"capabilities"`
	Expiration   string   `hcl:"expiration"`
}

func parsePathRule(item *ast.ObjectItem) (pathRule, bool, error) {
	key := "path"
	if len(item.Keys) > 0 {
		if v, ok := item.Keys[0].Token.Value().(string); ok {
			key = v
		}
	}
	templated, err := checkTemplate(key)
	if err != nil {
		return pathRule{}, false, fmt.Errorf("failed to validate policy templating: %w", err)
	}
	if strings.Contains(key, "+*") {
		return pathRule{}, false, fmt.Errorf("path %q: invalid use of wildcards ('+*' is forbidden)", key)
	}

	if body, ok := item.Val.(*ast.ObjectType); ok {
		if err := checkPathKeys(key, body.List); err != nil {
			return pathRule{}, false, err
		}
	}
	var body pathBody
	if err := hcl.DecodeObject(&body, item.Val); err != nil {
		return pathRule{}, false, fmt.Errorf("path %q: %w", key, err)
	}

	rule := pathRule{path: strings.TrimPrefix(key, "/")}
	if rule.caps, err = parseCapabilities(key, body); err != nil {
		return pathRule{}, false, err
	}
	if body.Expiration != "" {
		if rule.expiration, err = time.Parse(time.RFC3339, body.Expiration); err != nil {
			return pathRule{}, false, fmt.Errorf("path %q: invalid expiration time: %w", key, err)
		}
	}
	return rule, templated, nil
}

func checkPathKeys(path string, list *ast.ObjectList) error {
	valid := map[string]bool{"comment": true, "policy": true, "capabilities": true, "expiration": true}
	for k := range unsupportedPathKeys {
		valid[k] = true
	}
	if err := checkKeys(list, valid); err != nil {
		return fmt.Errorf("path %q: %w", path, err)
	}
	for _, item := range list.Items {
		if k := itemKey(item); unsupportedPathKeys[k] {
			return fmt.Errorf("path %q: baotest: %s is not supported by the test server", path, k)
		}
	}
	return nil
}

// parseCapabilities maps capability names, and the old "policy" shorthand,
// to a capSet. "deny" overrides everything else in the block.
func parseCapabilities(path string, body pathBody) (capSet, error) {
	names := body.Capabilities
	switch body.Policy {
	case "":
	case "deny":
		names = []string{"deny"}
	case "read":
		names = append(names, "read", "list")
	case "write":
		names = append(names, "create", "read", "update", "delete", "list")
	case "sudo":
		names = append(names, "create", "read", "update", "delete", "list", "sudo")
	default:
		return 0, fmt.Errorf("path %q: invalid policy %q", path, body.Policy)
	}

	var caps capSet
	for _, name := range names {
		c, ok := capabilityNames[name]
		if !ok {
			return 0, fmt.Errorf("path %q: invalid capability %q", path, name)
		}
		if c == capDeny {
			return capDeny, nil
		}
		caps |= c
	}
	return caps, nil
}

// checkKeys rejects keys outside valid, naming the line as OpenBao does.
func checkKeys(list *ast.ObjectList, valid map[string]bool) error {
	for _, item := range list.Items {
		key := itemKey(item)
		if !valid[key] {
			return fmt.Errorf("invalid key %q on line %d", key, item.Pos().Line)
		}
	}
	return nil
}

func itemKey(item *ast.ObjectItem) string {
	if len(item.Keys) == 0 {
		return ""
	}
	if v, ok := item.Keys[0].Token.Value().(string); ok {
		return v
	}
	return item.Keys[0].Token.Text
}

// policyRoute serves sys/policies/acl/<name>.
func (s *Server) policyRoute(name string) *route {
	name = strings.ToLower(strings.Trim(name, "/"))
	return newRoute().
		read(OpAdmin, func(r *request) (*response, error) { return s.readPolicy(name) }).
		write(OpAdmin, func(r *request) (*response, error) { return s.writePolicy(r, name) }).
		del(OpAdmin, func(r *request) (*response, error) { return s.deletePolicy(name) })
}

func (s *Server) handlePolicyList(r *request) (*response, error) {
	keys := append(sortedKeys(s.policies), "root")
	return listResponse(uniqueSorted(keys)), nil
}

func (s *Server) readPolicy(name string) (*response, error) {
	p, ok := s.policies[name]
	if !ok {
		return nil, nil
	}
	data := map[string]any{
		"name":                                  p.name,
		"policy":                                p.raw,
		"version":                               p.version,
		"cas_required":                          false,
		"allow_slashes_in_identity_templates":   p.allowSlashes,
		"allow_wildcards_in_identity_templates": p.allowWildcards,
	}
	if !p.modified.IsZero() {
		data["modified"] = formatTime(p.modified)
	}
	return &response{data: data}, nil
}

func (s *Server) writePolicy(r *request, name string) (*response, error) {
	if name == "" {
		return nil, badRequest("policy name must be provided in the URL")
	}
	if name == "root" {
		return nil, badRequest("cannot update %q policy", name)
	}
	if _, ok := r.data["cas"]; ok {
		return nil, unsupportedByTestServer("cas on policies")
	}
	raw, err := fieldString(r.data, "policy")
	if err != nil {
		return nil, err
	}
	if raw == "" {
		return nil, badRequest("'policy' parameter not supplied or empty")
	}

	p, err := parsePolicy(name, raw)
	if err != nil {
		return nil, badRequest("%v", err)
	}
	if p.allowSlashes, err = fieldBool(r.data, "allow_slashes_in_identity_templates", false); err != nil {
		return nil, err
	}
	if p.allowWildcards, err = fieldBool(r.data, "allow_wildcards_in_identity_templates", false); err != nil {
		return nil, err
	}
	p.version = 1
	if old, ok := s.policies[name]; ok {
		p.version = old.version + 1
	}
	p.modified = r.now
	s.policies[name] = p
	return nil, nil
}

func (s *Server) deletePolicy(name string) (*response, error) {
	switch name {
	case "root":
		return nil, badRequest("cannot delete %q policy", name)
	case "default":
		return nil, badRequest("cannot delete default policy")
	}
	delete(s.policies, name)
	return nil, nil
}
