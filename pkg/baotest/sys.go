package baotest

import (
	"strings"
	"time"

	"github.com/google/uuid"
)

// OpenBao's system-wide lease TTLs: 32 days for both default and maximum.
const (
	systemDefaultTTL = 768 * time.Hour
	systemMaxTTL     = 768 * time.Hour
)

// backend serves the paths below one mount.
type backend interface {
	// route resolves rest, the path below the mount, or returns nil.
	route(rest string) *route
}

// mount is a secrets engine or an auth method.
type mount struct {
	path        string // with trailing "/", relative to its table
	kind        string
	accessor    string
	uuid        string
	description string
	options     map[string]string
	defaultTTL  time.Duration
	maxTTL      time.Duration
	backend     backend
}

func newMount(path, kind, accessorPrefix, description string, b backend) *mount {
	return &mount{
		path:        path,
		kind:        kind,
		accessor:    accessorPrefix + randomHex(4),
		uuid:        uuid.NewString(),
		description: description,
		backend:     b,
	}
}

// leaseTTLs returns the mount's default and maximum lease TTLs, falling
// back to the system values.
func (m *mount) leaseTTLs() (def, maxTTL time.Duration) {
	def, maxTTL = m.defaultTTL, m.maxTTL
	if maxTTL <= 0 {
		maxTTL = systemMaxTTL
	}
	if def <= 0 {
		def = min(systemDefaultTTL, maxTTL)
	}
	return def, maxTTL
}

// nilBackend stands for built-in mounts whose paths the server does not
// implement (cubbyhole, identity).
type nilBackend struct{}

func (nilBackend) route(string) *route { return nil }

// sysRoute resolves a path below sys/.
func (s *Server) sysRoute(rest string) *route {
	switch {
	case rest == "seal-status":
		rt := newRoute().read(OpSealStatus, s.handleSealStatus)
		rt.unauthenticated, rt.sealExempt = true, true
		return rt
	case rest == "auth" || rest == "auth/":
		return newRoute().read(OpAdmin, s.handleMountList(s.auths))
	case strings.HasPrefix(rest, "auth/"):
		return s.mountRoute(s.auths, strings.TrimPrefix(rest, "auth/"), true)
	case rest == "mounts" || rest == "mounts/":
		return newRoute().read(OpAdmin, s.handleMountList(s.mounts))
	case strings.HasPrefix(rest, "mounts/"):
		return s.mountRoute(s.mounts, strings.TrimPrefix(rest, "mounts/"), false)
	case rest == "policies/acl/" || rest == "policies/acl":
		return newRoute().list(OpAdmin, s.handlePolicyList)
	case strings.HasPrefix(rest, "policies/acl/"):
		return s.policyRoute(strings.TrimPrefix(rest, "policies/acl/"))
	case strings.HasPrefix(rest, "leases/"):
		return s.leaseRoute(strings.TrimPrefix(rest, "leases/"))
	case rest == "capabilities-self":
		return newRoute().write(OpAdmin, s.handleCapabilitiesSelf)
	}
	return nil
}

// mountRoute serves sys/mounts/<path> or sys/auth/<path>. Enabling and
// disabling auth methods needs sudo, as in OpenBao.
func (s *Server) mountRoute(table map[string]*mount, path string, auth bool) *route {
	path = strings.Trim(path, "/") + "/"
	rt := newRoute().
		read(OpAdmin, func(r *request) (*response, error) { return s.readMount(table, path) }).
		write(OpAdmin, func(r *request) (*response, error) { return s.enableMount(r, path, auth) }).
		del(OpAdmin, func(r *request) (*response, error) { return s.disableMount(r, path, auth) })
	rt.sudo = auth
	return rt
}

func (s *Server) handleMountList(table map[string]*mount) handlerFunc {
	return func(r *request) (*response, error) {
		data := map[string]any{}
		for path, m := range table {
			data[path] = mountInfo(m)
		}
		return &response{data: data}, nil
	}
}

func (s *Server) readMount(table map[string]*mount, path string) (*response, error) {
	m, ok := table[path]
	if !ok {
		return nil, badRequest("No secret engine mount at %s", path)
	}
	return &response{data: mountInfo(m)}, nil
}

// mountInfo renders a mount as sys/mounts and sys/auth list it.
func mountInfo(m *mount) map[string]any {
	def, maxTTL := m.defaultTTL, m.maxTTL
	var options any
	if m.options != nil {
		options = m.options
	}
	return map[string]any{
		"type":        m.kind,
		"description": m.description,
		"accessor":    m.accessor,
		"uuid":        m.uuid,
		"config": map[string]any{
			"default_lease_ttl": seconds(def),
			"max_lease_ttl":     seconds(maxTTL),
			"force_no_cache":    false,
		},
		"options":                 options,
		"local":                   false,
		"seal_wrap":               false,
		"external_entropy_access": false,
		"plugin_version":          "",
		"running_plugin_version":  "v" + Version,
		"running_sha256":          "",
	}
}

// enableMount creates a secrets engine or auth method at path.
func (s *Server) enableMount(r *request, path string, auth bool) (*response, error) {
	kind, err := fieldString(r.data, "type")
	if err != nil {
		return nil, err
	}
	if kind == "" {
		return nil, badRequest("backend type must be specified as a string")
	}
	table := s.mounts
	if auth {
		table = s.auths
	}
	if err := checkMountPath(table, path, auth); err != nil {
		return nil, err
	}

	m, err := s.newBackendMount(r, path, kind, auth)
	if err != nil {
		return nil, err
	}
	if err := applyMountConfig(m, r.data); err != nil {
		return nil, err
	}
	table[path] = m
	return nil, nil
}

// checkMountPath rejects a path equal to, inside or above an existing mount.
func checkMountPath(table map[string]*mount, path string, auth bool) error {
	if !auth {
		for _, reserved := range []string{"auth/", "sys/"} {
			if strings.HasPrefix(path, reserved) {
				return badRequest("cannot mount %q: path is reserved", path)
			}
		}
	}
	for existing := range table {
		if strings.HasPrefix(path, existing) || strings.HasPrefix(existing, path) {
			prefix := ""
			if auth {
				prefix = "auth/"
			}
			return badRequest("path is already in use at %s%s", prefix, existing)
		}
	}
	return nil
}

// newBackendMount builds the engine of the requested type.
func (s *Server) newBackendMount(r *request, path, kind string, auth bool) (*mount, error) {
	description, err := fieldString(r.data, "description")
	if err != nil {
		return nil, err
	}
	options, _, err := fieldStringMap(r.data, "options")
	if err != nil {
		return nil, err
	}

	var b backend
	switch {
	case auth && (kind == "jwt" || kind == "oidc"):
		b = newJWTBackend(s, path)
	case auth && kind == "kubernetes":
		b = newKubernetesBackend(s, path)
	case !auth && (kind == "kv" || kind == "kv-v2"):
		if kind == "kv-v2" || options["version"] == "2" {
			kind = "kv"
			options = map[string]string{"version": "2"}
			b = newKVBackend(s, path)
		} else {
			return nil, unsupportedByTestServer("KV version 1 (set options.version to 2)")
		}
	case !auth && kind == "database":
		b = newDatabaseBackend(s, path)
	case !auth && kind == "pki":
		b = newPKIBackend(s, path)
	default:
		return nil, badRequest("plugin not found in the catalog: %s", kind)
	}

	prefix := kind + "_"
	if auth {
		prefix = "auth_" + kind + "_"
	}
	m := newMount(path, kind, prefix, description, b)
	m.options = options
	return m, nil
}

// applyMountConfig reads config.default_lease_ttl and config.max_lease_ttl.
func applyMountConfig(m *mount, data map[string]any) error {
	cfg, _, err := fieldMap(data, "config")
	if err != nil || cfg == nil {
		return err
	}
	if d, ok, err := fieldDuration(cfg, "default_lease_ttl"); err != nil {
		return err
	} else if ok {
		m.defaultTTL = d
	}
	if d, ok, err := fieldDuration(cfg, "max_lease_ttl"); err != nil {
		return err
	} else if ok {
		m.maxTTL = d
	}
	if m.maxTTL > 0 && m.defaultTTL > m.maxTTL {
		return badRequest("config.default_lease_ttl must be less than or equal to config.max_lease_ttl")
	}
	return nil
}

// disableMount removes a mount, revoking its leases or its tokens.
func (s *Server) disableMount(r *request, path string, auth bool) (*response, error) {
	if auth {
		if path == "token/" {
			return nil, badRequest("token credential backend cannot be disabled")
		}
		if _, ok := s.auths[path]; ok {
			s.revokeTokensByPathLocked("auth/"+path, r.now)
			delete(s.auths, path)
		}
		return nil, nil
	}

	switch path {
	case "sys/", "cubbyhole/", "identity/":
		return nil, badRequest("cannot unmount %q", path)
	}
	if _, ok := s.mounts[path]; ok {
		s.revokeLeasesByPrefixLocked(path, r.now)
		delete(s.mounts, path)
	}
	return nil, nil
}

// handleCapabilitiesSelf returns the calling token's capabilities on paths.
func (s *Server) handleCapabilitiesSelf(r *request) (*response, error) {
	paths, _, err := fieldStrings(r.data, "paths")
	if err != nil {
		return nil, err
	}
	if p, _ := fieldString(r.data, "path"); p != "" {
		paths = append(paths, p)
	}
	if len(paths) == 0 {
		return nil, badRequest("paths must be supplied")
	}

	acl := s.aclForTokenLocked(r.token)
	data := map[string]any{}
	var all []string
	for _, p := range paths {
		names := []string{"root"}
		if !r.token.isRoot() {
			names = acl.capabilities(strings.TrimPrefix(p, "/"), "").names()
		}
		data[p] = names
		all = append(all, names...)
	}
	data["capabilities"] = uniqueSorted(all)
	return &response{data: data}, nil
}
