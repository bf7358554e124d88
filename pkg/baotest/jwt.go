package baotest

import (
	"crypto"
	"fmt"
	"strings"
	"time"
)

// jwtBackend is the JWT auth method, validating tokens offline against
// configured public keys.
type jwtBackend struct {
	s      *Server
	path   string // below auth/, e.g. "jwt/"
	config *jwtConfig
	roles  map[string]*jwtRole
}

type jwtConfig struct {
	pubKeyPEMs    []string
	pubKeys       []crypto.PublicKey
	boundIssuer   string
	defaultRole   string
	supportedAlgs []string
}

type jwtRole struct {
	roleType             string
	boundAudiences       []string
	boundSubject         string
	boundClaims          map[string]any
	boundClaimsType      string
	userClaim            string
	userClaimJSONPointer bool
	claimMappings        map[string]string
	allowedRedirectURIs  []string
	expirationLeeway     time.Duration
	notBeforeLeeway      time.Duration
	clockSkewLeeway      time.Duration
	token                tokenParams
}

// reservedMetadata are alias metadata keys the login sets itself.
var reservedMetadata = []string{"role"}

func newJWTBackend(s *Server, path string) *jwtBackend {
	return &jwtBackend{s: s, path: path, roles: map[string]*jwtRole{}}
}

func (b *jwtBackend) route(rest string) *route {
	switch {
	case rest == "config":
		return newRoute().read(OpAdmin, b.readConfig).write(OpAdmin, b.writeConfig)
	case rest == "login":
		rt := newRoute().write(OpLogin, b.login)
		rt.unauthenticated = true
		return rt
	case rest == "role" || rest == "role/":
		return newRoute().list(OpAdmin, func(*request) (*response, error) { return listResponse(sortedKeys(b.roles)), nil })
	case strings.HasPrefix(rest, "role/"):
		name := strings.ToLower(strings.TrimPrefix(rest, "role/"))
		rt := newRoute().
			read(OpAdmin, func(*request) (*response, error) { return b.readRole(name) }).
			write(OpAdmin, func(r *request) (*response, error) { return b.writeRole(r, name) }).
			del(OpAdmin, func(*request) (*response, error) { delete(b.roles, name); return nil, nil })
		rt.exists = func(*request) bool { return b.roles[name] != nil }
		return rt
	}
	return nil
}

// writeConfig stores the validation keys. The test server never dials out,
// so JWKS and OIDC discovery are rejected.
func (b *jwtBackend) writeConfig(r *request) (*response, error) {
	for _, key := range []string{"jwks_url", "oidc_discovery_url", "jwks_pairs", "provider_config"} {
		if v, _ := fieldString(r.data, key); v != "" {
			return nil, unsupportedByTestServer(key + " (use jwt_validation_pubkeys)")
		}
	}
	pems, _, err := fieldStrings(r.data, "jwt_validation_pubkeys")
	if err != nil {
		return nil, err
	}
	if len(pems) == 0 {
		return nil, badRequest("exactly one of 'jwt_validation_pubkeys', 'jwks_url', 'jwks_pairs', 'oidc_discovery_url', or 'provider_config' must be set")
	}

	cfg := &jwtConfig{pubKeyPEMs: pems}
	for _, p := range pems {
		key, err := parsePublicKeyPEM(p)
		if err != nil {
			return nil, badRequest("error parsing public key: %v", err)
		}
		cfg.pubKeys = append(cfg.pubKeys, key)
	}
	if cfg.boundIssuer, err = fieldString(r.data, "bound_issuer"); err != nil {
		return nil, err
	}
	if cfg.defaultRole, err = fieldString(r.data, "default_role"); err != nil {
		return nil, err
	}
	if cfg.supportedAlgs, _, err = fieldStrings(r.data, "jwt_supported_algs"); err != nil {
		return nil, err
	}
	b.config = cfg
	return nil, nil
}

func (b *jwtBackend) readConfig(*request) (*response, error) {
	if b.config == nil {
		return nil, nil
	}
	algs := b.config.supportedAlgs
	if algs == nil {
		algs = []string{}
	}
	return &response{data: map[string]any{
		"jwt_validation_pubkeys": b.config.pubKeyPEMs,
		"bound_issuer":           b.config.boundIssuer,
		"default_role":           b.config.defaultRole,
		"jwt_supported_algs":     algs,
		"jwks_url":               "",
		"oidc_discovery_url":     "",
	}}, nil
}

// login validates a JWT against a role and issues a token. Checks run in
// OpenBao's order so the first failure reported is the same.
func (b *jwtBackend) login(r *request) (*response, error) {
	if b.config == nil {
		return nil, badRequest("could not load configuration")
	}
	roleName, role, err := b.loginRole(r)
	if err != nil {
		return nil, err
	}
	raw, err := fieldString(r.data, "jwt")
	if err != nil {
		return nil, err
	}
	if raw == "" {
		return nil, badRequest("missing token")
	}

	claims, err := verifyJWT(raw, b.expectations(role, r.now))
	if err != nil {
		return nil, badRequest("error validating token: %v", err)
	}
	if aud, _ := audienceClaim(claims); len(aud) > 0 && len(role.boundAudiences) == 0 {
		return nil, badRequest("audience claim found in JWT but no audiences bound to the role")
	}

	aliasName, metadata, err := jwtIdentity(claims, role)
	if err != nil {
		return nil, badRequest("%v", err)
	}
	if err := matchBoundClaims(role.boundClaims, claims, role.boundClaimsType == "glob"); err != nil {
		return nil, badRequest("error validating claims: %v", err)
	}
	metadata["role"] = roleName

	return b.issueToken(r, roleName, role, aliasName, metadata)
}

func (b *jwtBackend) loginRole(r *request) (string, *jwtRole, error) {
	name, err := fieldString(r.data, "role")
	if err != nil {
		return "", nil, err
	}
	name = strings.ToLower(name)
	if name == "" {
		name = b.config.defaultRole
	}
	if name == "" {
		return "", nil, badRequest("missing role")
	}
	role := b.roles[name]
	if role == nil {
		return "", nil, badRequest("role %q could not be found", name)
	}
	if role.roleType == "oidc" {
		return "", nil, badRequest("role with oidc role_type is not allowed")
	}
	return name, role, nil
}

func (b *jwtBackend) expectations(role *jwtRole, now time.Time) expectations {
	algs := b.config.supportedAlgs
	if len(algs) == 0 {
		algs = []string{"RS256", "RS384", "RS512", "ES256", "ES384", "ES512", "PS256", "PS384", "PS512", "EdDSA"}
	}
	return expectations{
		issuer:     b.config.boundIssuer,
		subject:    role.boundSubject,
		audiences:  role.boundAudiences,
		algorithms: algs,
		notBefore:  role.notBeforeLeeway,
		expiration: role.expirationLeeway,
		clockSkew:  role.clockSkewLeeway,
		now:        now,
		publicKeys: b.config.pubKeys,
	}
}

// jwtIdentity returns the alias name (the user claim) and the metadata
// from claim_mappings.
func jwtIdentity(claims map[string]any, role *jwtRole) (string, map[string]string, error) {
	var user any
	if role.userClaimJSONPointer {
		user = claimValue(claims, role.userClaim)
	} else {
		user = claims[role.userClaim]
	}
	if user == nil {
		return "", nil, fmt.Errorf("claim %q not found in token", role.userClaim)
	}
	name, ok := user.(string)
	if !ok {
		return "", nil, fmt.Errorf("claim %q could not be converted to string", role.userClaim)
	}

	metadata := map[string]string{}
	for _, source := range sortedKeys(role.claimMappings) {
		v := claimValue(claims, source)
		if v == nil {
			continue
		}
		str, ok := v.(string)
		if !ok {
			return "", nil, fmt.Errorf("error converting claim '%s' to string", source)
		}
		metadata[role.claimMappings[source]] = str
	}
	return name, metadata, nil
}

func (b *jwtBackend) issueToken(r *request, roleName string, role *jwtRole, aliasName string, metadata map[string]string) (*response, error) {
	m := b.s.auths[b.path]
	ent := b.s.entityForAliasLocked(m, aliasName, metadata)
	return b.s.issueLoginTokenLocked(loginToken{
		mount:       m,
		params:      role.token,
		displayName: aliasName,
		entity:      ent,
		metadata:    metadata,
		renewTTLs: func() (time.Duration, time.Duration, time.Duration, error) {
			current := b.roles[roleName]
			if current == nil {
				return 0, 0, 0, fmt.Errorf("role %s does not exist during renewal", roleName)
			}
			return current.token.ttl, current.token.maxTTL, current.token.period, nil
		},
	}, r.now)
}
