package baotest

import (
	"crypto"
	"fmt"
	"maps"
	"strings"
	"time"
)

// kubernetesBackend is the Kubernetes auth method.
//
// NOTE: OpenBao 2.6 verifies the service-account JWT with pem_keys and then
// always calls the cluster's TokenReview API to confirm the token is still
// valid. This server never dials kubernetes_host, so it accepts any token
// whose signature, issuer, audience and service account are valid. A token
// revoked in the cluster (pod deleted) still logs in here.
type kubernetesBackend struct {
	s      *Server
	path   string
	config *kubernetesConfig
	roles  map[string]*kubernetesRole
}

type kubernetesConfig struct {
	host              string
	caCert            string
	pemKeys           []string
	keys              []crypto.PublicKey
	issuer            string
	disableISS        bool
	disableLocalCAJWT bool
}

type kubernetesRole struct {
	serviceAccountNames      []string
	serviceAccountNamespaces []string
	audience                 string
	aliasNameSource          string
	token                    tokenParams
}

// kubernetesAlgs are the algorithms OpenBao's Kubernetes auth accepts.
var kubernetesAlgs = []string{"RS256", "RS384", "RS512", "ES256", "ES384", "ES512"}

func newKubernetesBackend(s *Server, path string) *kubernetesBackend {
	return &kubernetesBackend{s: s, path: path, roles: map[string]*kubernetesRole{}}
}

func (b *kubernetesBackend) route(rest string) *route {
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
		name := strings.TrimPrefix(rest, "role/")
		rt := newRoute().
			read(OpAdmin, func(*request) (*response, error) { return b.readRole(name) }).
			write(OpAdmin, func(r *request) (*response, error) { return b.writeRole(r, name) }).
			del(OpAdmin, func(*request) (*response, error) { delete(b.roles, name); return nil, nil })
		rt.exists = func(*request) bool { return b.roles[name] != nil }
		return rt
	}
	return nil
}

func (b *kubernetesBackend) writeConfig(r *request) (*response, error) {
	cfg := &kubernetesConfig{}
	var err error
	if cfg.host, err = fieldString(r.data, "kubernetes_host"); err != nil {
		return nil, err
	}
	if cfg.host == "" {
		return nil, badRequest("no host provided")
	}
	if cfg.caCert, err = fieldString(r.data, "kubernetes_ca_cert"); err != nil {
		return nil, err
	}
	if cfg.issuer, err = fieldString(r.data, "issuer"); err != nil {
		return nil, err
	}
	if cfg.disableISS, err = fieldBool(r.data, "disable_iss_validation", true); err != nil {
		return nil, err
	}
	if cfg.disableLocalCAJWT, err = fieldBool(r.data, "disable_local_ca_jwt", false); err != nil {
		return nil, err
	}
	if cfg.disableLocalCAJWT && cfg.caCert == "" {
		return nil, badRequest("kubernetes_ca_cert must be given when disable_local_ca_jwt is true")
	}

	if cfg.pemKeys, _, err = fieldStrings(r.data, "pem_keys"); err != nil {
		return nil, err
	}
	for _, p := range cfg.pemKeys {
		key, err := parsePublicKeyPEM(p)
		if err != nil {
			return nil, badRequest("%v", err)
		}
		cfg.keys = append(cfg.keys, key)
	}
	b.config = cfg
	return nil, nil
}

func (b *kubernetesBackend) readConfig(*request) (*response, error) {
	if b.config == nil {
		return nil, nil
	}
	return &response{data: map[string]any{
		"kubernetes_host":        b.config.host,
		"kubernetes_ca_cert":     b.config.caCert,
		"pem_keys":               nonNilStrings(b.config.pemKeys),
		"issuer":                 b.config.issuer,
		"disable_iss_validation": b.config.disableISS,
		"disable_local_ca_jwt":   b.config.disableLocalCAJWT,
	}}, nil
}

func (b *kubernetesBackend) writeRole(r *request, name string) (*response, error) {
	role := &kubernetesRole{aliasNameSource: "serviceaccount_uid"}
	if old := b.roles[name]; old != nil {
		copied := *old
		role = &copied
	}
	if err := parseTokenParams(r.data, &role.token); err != nil {
		return nil, err
	}
	if err := parseKubernetesBindings(r.data, role); err != nil {
		return nil, err
	}
	if err := checkTokenTTLs(role.token, "token ttl should not be greater than token max ttl"); err != nil {
		return nil, err
	}
	b.roles[name] = role
	return nil, nil
}

func parseKubernetesBindings(data map[string]any, role *kubernetesRole) error {
	if v, _ := fieldString(data, "bound_service_account_namespace_selector"); v != "" {
		return unsupportedByTestServer("bound_service_account_namespace_selector")
	}
	if list, ok, err := fieldStrings(data, "bound_service_account_names"); err != nil {
		return err
	} else if ok {
		role.serviceAccountNames = list
	}
	if list, ok, err := fieldStrings(data, "bound_service_account_namespaces"); err != nil {
		return err
	} else if ok {
		role.serviceAccountNamespaces = list
	}

	switch {
	case len(role.serviceAccountNames) == 0:
		return badRequest("%q can not be empty", "bound_service_account_names")
	case len(role.serviceAccountNames) > 1 && contains(role.serviceAccountNames, "*"):
		return badRequest("can not mix %q with values", "*")
	case len(role.serviceAccountNamespaces) == 0:
		return badRequest("%q can not be empty if %q is not set", "bound_service_account_namespaces", "bound_service_account_namespace_selector")
	case len(role.serviceAccountNamespaces) > 1 && contains(role.serviceAccountNamespaces, "*"):
		return badRequest("can not mix %q with values", "*")
	}

	var err error
	if v, ok := data["audience"]; ok && v != nil {
		if role.audience, err = fieldString(data, "audience"); err != nil {
			return err
		}
	}
	if source, err := fieldString(data, "alias_name_source"); err != nil {
		return err
	} else if source != "" {
		if source != "serviceaccount_uid" && source != "serviceaccount_name" {
			return badRequest("invalid alias_name_source: %q", source)
		}
		role.aliasNameSource = source
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, item := range list {
		if item == s {
			return true
		}
	}
	return false
}

func (b *kubernetesBackend) readRole(name string) (*response, error) {
	role := b.roles[name]
	if role == nil {
		return nil, nil
	}
	data := role.token.fields()
	maps.Copy(data, map[string]any{
		"bound_service_account_names":      role.serviceAccountNames,
		"bound_service_account_namespaces": role.serviceAccountNamespaces,
		"audience":                         role.audience,
		"alias_name_source":                role.aliasNameSource,
	})
	return &response{data: data}, nil
}

// serviceAccount is the identity a service-account JWT carries, from the
// projected "kubernetes.io" claim or the legacy top-level claims.
type serviceAccount struct {
	name, uid, namespace, secretName string
}

func serviceAccountFromClaims(claims map[string]any) serviceAccount {
	str := func(v any) string { s, _ := v.(string); return s }
	sa := serviceAccount{
		name:       str(claims["kubernetes.io/serviceaccount/service-account.name"]),
		uid:        str(claims["kubernetes.io/serviceaccount/service-account.uid"]),
		namespace:  str(claims["kubernetes.io/serviceaccount/namespace"]),
		secretName: str(claims["kubernetes.io/serviceaccount/secret.name"]),
	}
	if k8s, ok := claims["kubernetes.io"].(map[string]any); ok {
		sa.namespace = str(k8s["namespace"])
		if acct, ok := k8s["serviceaccount"].(map[string]any); ok {
			sa.name, sa.uid = str(acct["name"]), str(acct["uid"])
		}
	}
	return sa
}

// login validates a service-account JWT against a role and issues a token.
func (b *kubernetesBackend) login(r *request) (*response, error) {
	roleName, err := fieldString(r.data, "role")
	if err != nil {
		return nil, err
	}
	if roleName == "" {
		return nil, badRequest("missing role")
	}
	raw, err := fieldString(r.data, "jwt")
	if err != nil {
		return nil, err
	}
	if raw == "" {
		return nil, badRequest("missing jwt")
	}
	role := b.roles[roleName]
	if role == nil {
		return nil, badRequest("invalid role name %q", roleName)
	}
	if b.config == nil {
		return nil, internalError("could not load backend configuration")
	}

	sa, err := b.validate(raw, role, r.now)
	if err != nil {
		return nil, err
	}
	return b.issueToken(r, roleName, role, sa)
}

// validate checks the JWT offline and the role's service-account bindings.
func (b *kubernetesBackend) validate(raw string, role *kubernetesRole, now time.Time) (serviceAccount, error) {
	if len(b.config.keys) == 0 {
		b.s.log.Warn("kubernetes login rejected: the test server needs pem_keys because it cannot call TokenReview", "mount", b.path)
		return serviceAccount{}, errPermissionDenied
	}

	exp := expectations{algorithms: kubernetesAlgs, allowNoTimes: true, now: now, publicKeys: b.config.keys}
	if !b.config.disableISS && b.config.issuer != "" {
		exp.issuer = b.config.issuer
	}
	if role.audience != "" {
		exp.audiences = []string{role.audience}
	}
	claims, err := verifyJWT(raw, exp)
	if err != nil {
		if strings.Contains(err.Error(), "verifying token signature") {
			return serviceAccount{}, errPermissionDenied
		}
		return serviceAccount{}, forbidden("%v", err)
	}

	sa := serviceAccountFromClaims(claims)
	names := role.serviceAccountNames
	if !(len(names) == 1 && names[0] == "*") && !globListContains(names, sa.name) {
		return serviceAccount{}, forbidden("service account name not authorized")
	}
	namespaces := role.serviceAccountNamespaces
	if namespaces[0] != "*" && !globListContains(namespaces, sa.namespace) {
		return serviceAccount{}, forbidden("namespace not authorized")
	}
	if sa.uid == "" {
		return serviceAccount{}, internalError("could not parse UID from claims")
	}
	return sa, nil
}

func (b *kubernetesBackend) issueToken(r *request, roleName string, role *kubernetesRole, sa serviceAccount) (*response, error) {
	aliasName := sa.uid
	if role.aliasNameSource == "serviceaccount_name" {
		aliasName = fmt.Sprintf("%s/%s", sa.namespace, sa.name)
	}
	aliasMeta := map[string]string{
		"service_account_uid":         sa.uid,
		"service_account_name":        sa.name,
		"service_account_namespace":   sa.namespace,
		"service_account_secret_name": sa.secretName,
	}
	tokenMeta := maps.Clone(aliasMeta)
	tokenMeta["role"] = roleName

	m := b.s.auths[b.path]
	ent := b.s.entityForAliasLocked(m, aliasName, aliasMeta)
	return b.s.issueLoginTokenLocked(loginToken{
		mount:       m,
		params:      role.token,
		displayName: fmt.Sprintf("%s-%s", sa.namespace, sa.name),
		entity:      ent,
		metadata:    tokenMeta,
		renewTTLs: func() (time.Duration, time.Duration, time.Duration, error) {
			current := b.roles[roleName]
			if current == nil {
				return 0, 0, 0, fmt.Errorf("role %s does not exist during renewal", roleName)
			}
			return current.token.ttl, current.token.maxTTL, current.token.period, nil
		},
	}, r.now)
}
