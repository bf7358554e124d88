package baotest

import (
	"fmt"
	"maps"
	"strings"
	"time"
)

// databaseBackend is a database secrets engine that issues credentials for
// a database it never connects to. Usernames follow OpenBao's default
// template and passwords its default password policy.
type databaseBackend struct {
	s           *Server
	path        string
	connections map[string]*dbConnection
	roles       map[string]*dbRole
	users       map[string]bool // usernames whose lease is active
}

type dbConnection struct {
	pluginName    string
	connectionURL string
	username      string
	allowedRoles  []string
	verify        bool
}

type dbRole struct {
	dbName     string
	defaultTTL time.Duration
	maxTTL     time.Duration
	statements map[string][]string // creation, revocation, renew, rollback
}

var dbStatementFields = []string{"creation_statements", "revocation_statements", "renew_statements", "rollback_statements"}

func newDatabaseBackend(s *Server, path string) *databaseBackend {
	return &databaseBackend{s: s, path: path, connections: map[string]*dbConnection{}, roles: map[string]*dbRole{}, users: map[string]bool{}}
}

func (b *databaseBackend) route(rest string) *route {
	head, name, _ := strings.Cut(rest, "/")
	switch {
	case head == "config" && name == "":
		return newRoute().list(OpAdmin, func(*request) (*response, error) { return listResponse(sortedKeys(b.connections)), nil })
	case head == "config":
		return newRoute().
			read(OpAdmin, func(*request) (*response, error) { return b.readConnection(name) }).
			write(OpAdmin, func(r *request) (*response, error) { return b.writeConnection(r, name) }).
			del(OpAdmin, func(*request) (*response, error) { delete(b.connections, name); return nil, nil })
	case head == "roles" && name == "":
		return newRoute().list(OpAdmin, func(*request) (*response, error) { return listResponse(sortedKeys(b.roles)), nil })
	case head == "roles":
		rt := newRoute().
			read(OpAdmin, func(*request) (*response, error) { return b.readRole(name) }).
			write(OpAdmin, func(r *request) (*response, error) { return b.writeRole(r, name) }).
			del(OpAdmin, func(*request) (*response, error) { delete(b.roles, name); return nil, nil })
		rt.exists = func(*request) bool { return b.roles[name] != nil }
		return rt
	case head == "creds" && name != "":
		return newRoute().read(OpDynamicRead, func(r *request) (*response, error) { return b.issueCreds(r, name) })
	}
	return nil
}

// writeConnection stores a connection. The URL is kept but never dialed.
func (b *databaseBackend) writeConnection(r *request, name string) (*response, error) {
	c := &dbConnection{}
	var err error
	if c.pluginName, err = fieldString(r.data, "plugin_name"); err != nil {
		return nil, err
	}
	if c.pluginName == "" {
		return nil, badRequest("empty plugin name")
	}
	if c.connectionURL, err = fieldString(r.data, "connection_url"); err != nil {
		return nil, err
	}
	if c.username, err = fieldString(r.data, "username"); err != nil {
		return nil, err
	}
	if c.allowedRoles, _, err = fieldStrings(r.data, "allowed_roles"); err != nil {
		return nil, err
	}
	if c.verify, err = fieldBool(r.data, "verify_connection", true); err != nil {
		return nil, err
	}
	b.connections[name] = c
	return nil, nil
}

func (b *databaseBackend) readConnection(name string) (*response, error) {
	c := b.connections[name]
	if c == nil {
		return nil, nil
	}
	return &response{data: map[string]any{
		"plugin_name":                        c.pluginName,
		"connection_details":                 map[string]any{"connection_url": c.connectionURL, "username": c.username},
		"allowed_roles":                      nonNilStrings(c.allowedRoles),
		"verify_connection":                  c.verify,
		"password_policy":                    "",
		"plugin_version":                     "",
		"root_credentials_rotate_statements": []string{},
	}}, nil
}

func (b *databaseBackend) writeRole(r *request, name string) (*response, error) {
	role := &dbRole{statements: map[string][]string{}}
	if old := b.roles[name]; old != nil {
		copied := *old
		copied.statements = maps.Clone(old.statements)
		role = &copied
	}

	dbName, err := fieldString(r.data, "db_name")
	if err != nil {
		return nil, err
	}
	if dbName != "" {
		role.dbName = dbName
	}
	if role.dbName == "" {
		return nil, badRequest("database name is required")
	}
	if err := parseDBRoleTTLs(r.data, role); err != nil {
		return nil, err
	}
	for _, field := range dbStatementFields {
		if list, ok, err := fieldStrings(r.data, field); err != nil {
			return nil, err
		} else if ok {
			role.statements[field] = list
		}
	}
	b.roles[name] = role
	return nil, nil
}

func parseDBRoleTTLs(data map[string]any, role *dbRole) error {
	if d, ok, err := fieldDuration(data, "default_ttl"); err != nil {
		return err
	} else if ok {
		role.defaultTTL = d
	}
	if d, ok, err := fieldDuration(data, "max_ttl"); err != nil {
		return err
	} else if ok {
		role.maxTTL = d
	}
	if role.maxTTL > 0 && role.defaultTTL > role.maxTTL {
		return badRequest("ttl cannot be greater than max_ttl")
	}
	return nil
}

func (b *databaseBackend) readRole(name string) (*response, error) {
	role := b.roles[name]
	if role == nil {
		return nil, nil
	}
	data := map[string]any{
		"db_name":         role.dbName,
		"default_ttl":     seconds(role.defaultTTL),
		"max_ttl":         seconds(role.maxTTL),
		"credential_type": "password",
	}
	for _, field := range dbStatementFields {
		data[field] = nonNilStrings(role.statements[field])
	}
	return &response{data: data}, nil
}

// issueCreds creates a username and password with a renewable lease.
func (b *databaseBackend) issueCreds(r *request, name string) (*response, error) {
	role := b.roles[name]
	if role == nil {
		return nil, badRequest("unknown role: %s", name)
	}
	conn := b.connections[role.dbName]
	if conn == nil {
		return nil, internalError("failed to find entry for connection with name: %q", role.dbName)
	}
	if !contains(conn.allowedRoles, "*") && !globListContains(conn.allowedRoles, name) {
		return nil, internalError("%q is not an allowed role", name)
	}

	username := databaseUsername(r.token.displayName, name, r.now)
	l, ttl, err := b.s.newLeaseLocked(leaseSpec{
		mount:     b.s.mounts[b.path],
		path:      b.path + "creds/" + name,
		token:     r.token,
		ttl:       role.defaultTTL,
		maxTTL:    role.maxTTL,
		renewable: true,
		renewTTLs: func() (time.Duration, time.Duration, error) {
			current := b.roles[name]
			if current == nil {
				return 0, 0, fmt.Errorf("error during renew: could not find role with name %q", name)
			}
			return current.defaultTTL, current.maxTTL, nil
		},
		onRevoke: func() { delete(b.users, username) },
	}, r.now)
	if err != nil {
		return nil, err
	}

	b.users[username] = true
	return &response{
		leaseID:       l.id,
		renewable:     true,
		leaseDuration: seconds(ttl),
		data:          map[string]any{"username": username, "password": databasePassword()},
	}, nil
}

// databaseUsername follows OpenBao's default template:
// v-<display name, 8>-<role, 8>-<20 random>-<unix time>, at most 63 bytes.
func databaseUsername(displayName, role string, now time.Time) string {
	name := fmt.Sprintf("v-%s-%s-%s-%d", truncate(displayName, 8), truncate(role, 8), randomString(20, base62), now.Unix())
	return truncate(name, 63)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// databasePassword follows OpenBao's default password policy: 20
// characters of letters, digits and "-", with at least one of each kind.
func databasePassword() string {
	const alphabet = base62 + "-"
	for {
		p := randomString(20, alphabet)
		if strings.ContainsAny(p, "abcdefghijklmnopqrstuvwxyz") && strings.ContainsAny(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZ") &&
			strings.ContainsAny(p, "0123456789") && strings.Contains(p, "-") {
			return p
		}
	}
}

// DatabaseUsers returns the usernames with an active lease on the database
// engine mounted at mount ("database" or "database/").
func (s *Server) DatabaseUsers(mount string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.expireLocked(s.now())
	m := s.mounts[strings.Trim(mount, "/")+"/"]
	if m == nil {
		return nil
	}
	b, ok := m.backend.(*databaseBackend)
	if !ok {
		return nil
	}
	return sortedKeys(b.users)
}
