package baotest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/openbao/openbao/api/v2"
)

// The provisioning helpers below configure any OpenBao, this server or a
// real one, through the HTTP API. They need a client with a token allowed
// to configure mounts and policies (usually the root token). Mount names
// are given without slashes at either end ("jwt", "secret").

// JWTRole is a role of the JWT auth method.
type JWTRole struct {
	// RoleType defaults to "jwt".
	RoleType       string
	BoundAudiences []string
	BoundSubject   string
	// BoundClaims maps a claim name or JSON pointer
	// ("/kubernetes.io/namespace") to a value or a list of values.
	BoundClaims map[string]any
	// BoundClaimsType is "string" (default) or "glob".
	BoundClaimsType string
	// UserClaim defaults to "sub".
	UserClaim string
	// ClaimMappings maps a claim name or JSON pointer to a metadata key.
	ClaimMappings map[string]string
	TokenPolicies []string
	TokenTTL      time.Duration
	TokenMaxTTL   time.Duration
	// TokenType is "service" (default) or "batch".
	TokenType string
	// ClockSkewLeeway is the leeway on exp, nbf and iat; zero means
	// OpenBao's default of 60 seconds.
	ClockSkewLeeway time.Duration
}

// KubernetesConfig configures the Kubernetes auth method.
type KubernetesConfig struct {
	// Host is the API server URL. This test server never dials it.
	Host string
	// PEMKeys are the service-account signing public keys.
	PEMKeys [][]byte
	// Issuer, when set, is checked against the "iss" claim.
	Issuer string
}

// KubernetesRole is a role of the Kubernetes auth method.
type KubernetesRole struct {
	ServiceAccountNames      []string
	ServiceAccountNamespaces []string
	Audience                 string
	// AliasNameSource is "serviceaccount_uid" (default) or
	// "serviceaccount_name".
	AliasNameSource string
	TokenPolicies   []string
	TokenTTL        time.Duration
	TokenMaxTTL     time.Duration
}

// DatabaseConnection configures a database engine connection.
type DatabaseConnection struct {
	// Name defaults to "db".
	Name string
	// PluginName defaults to "postgresql-database-plugin".
	PluginName    string
	ConnectionURL string
	Username      string
	Password      string
	// AllowedRoles defaults to all roles ("*").
	AllowedRoles []string
	// VerifyConnection makes a real OpenBao connect at configuration time.
	VerifyConnection bool
}

// DatabaseRole is a dynamic role of the database engine.
type DatabaseRole struct {
	// DBName defaults to "db".
	DBName               string
	DefaultTTL           time.Duration
	MaxTTL               time.Duration
	CreationStatements   []string
	RevocationStatements []string
}

// PKIRole is a role of the PKI engine.
type PKIRole struct {
	AllowedDomains   []string
	AllowSubdomains  bool
	AllowBareDomains bool
	AllowAnyName     bool
	TTL              time.Duration
	MaxTTL           time.Duration
	// KeyType is "rsa" (default) or "ec"; KeyBits defaults by type.
	KeyType       string
	KeyBits       int
	GenerateLease bool
}

// EnableJWTAuth enables the JWT auth method at mount and configures it to
// validate tokens from issuerURL offline with pubKeyPEM.
func EnableJWTAuth(ctx context.Context, c *api.Client, mount, issuerURL string, pubKeyPEM []byte) error {
	mount = cleanMount(mount)
	if err := c.Sys().EnableAuthWithOptionsWithContext(ctx, mount, &api.EnableAuthOptions{Type: "jwt"}); err != nil {
		return fmt.Errorf("enable jwt auth at %s: %w", mount, err)
	}
	config := map[string]any{
		"jwt_validation_pubkeys": []string{string(pubKeyPEM)},
		"bound_issuer":           issuerURL,
	}
	if _, err := c.Logical().WriteWithContext(ctx, "auth/"+mount+"/config", config); err != nil {
		return fmt.Errorf("configure jwt auth at %s: %w", mount, err)
	}
	return nil
}

// WriteJWTRole creates or replaces a JWT auth role.
func WriteJWTRole(ctx context.Context, c *api.Client, mount, role string, r JWTRole) error {
	body := map[string]any{
		"role_type":       orDefault(r.RoleType, "jwt"),
		"user_claim":      orDefault(r.UserClaim, "sub"),
		"bound_audiences": r.BoundAudiences,
		"token_policies":  r.TokenPolicies,
		"token_ttl":       seconds(r.TokenTTL),
		"token_max_ttl":   seconds(r.TokenMaxTTL),
		"token_type":      orDefault(r.TokenType, "default"),
	}
	optional := map[string]any{
		"bound_subject":     r.BoundSubject,
		"bound_claims_type": r.BoundClaimsType,
	}
	for k, v := range optional {
		if v != "" {
			body[k] = v
		}
	}
	if r.BoundClaims != nil {
		body["bound_claims"] = r.BoundClaims
	}
	if r.ClaimMappings != nil {
		body["claim_mappings"] = r.ClaimMappings
	}
	if r.ClockSkewLeeway != 0 {
		body["clock_skew_leeway"] = seconds(r.ClockSkewLeeway)
	}
	return write(ctx, c, "auth/"+cleanMount(mount)+"/role/"+role, body, "write jwt role %s", role)
}

// EnableKubernetesAuth enables the Kubernetes auth method at mount.
func EnableKubernetesAuth(ctx context.Context, c *api.Client, mount string, cfg KubernetesConfig) error {
	mount = cleanMount(mount)
	if err := c.Sys().EnableAuthWithOptionsWithContext(ctx, mount, &api.EnableAuthOptions{Type: "kubernetes"}); err != nil {
		return fmt.Errorf("enable kubernetes auth at %s: %w", mount, err)
	}
	keys := make([]string, len(cfg.PEMKeys))
	for i, k := range cfg.PEMKeys {
		keys[i] = string(k)
	}
	body := map[string]any{"kubernetes_host": cfg.Host, "pem_keys": keys}
	if cfg.Issuer != "" {
		body["issuer"] = cfg.Issuer
		body["disable_iss_validation"] = false
	}
	return write(ctx, c, "auth/"+mount+"/config", body, "configure kubernetes auth at %s", mount)
}

// WriteKubernetesRole creates or replaces a Kubernetes auth role.
func WriteKubernetesRole(ctx context.Context, c *api.Client, mount, role string, r KubernetesRole) error {
	body := map[string]any{
		"bound_service_account_names":      r.ServiceAccountNames,
		"bound_service_account_namespaces": r.ServiceAccountNamespaces,
		"token_policies":                   r.TokenPolicies,
		"token_ttl":                        seconds(r.TokenTTL),
		"token_max_ttl":                    seconds(r.TokenMaxTTL),
		"alias_name_source":                orDefault(r.AliasNameSource, "serviceaccount_uid"),
	}
	if r.Audience != "" {
		body["audience"] = r.Audience
	}
	return write(ctx, c, "auth/"+cleanMount(mount)+"/role/"+role, body, "write kubernetes role %s", role)
}

// EnableKV2 mounts a KV version 2 engine at mount.
func EnableKV2(ctx context.Context, c *api.Client, mount string) error {
	mount = cleanMount(mount)
	input := &api.MountInput{Type: "kv", Options: map[string]string{"version": "2"}}
	if err := c.Sys().MountWithContext(ctx, mount, input); err != nil {
		return fmt.Errorf("enable kv-v2 at %s: %w", mount, err)
	}
	return nil
}

// PutKV2 writes data as a new version of path and returns the version.
func PutKV2(ctx context.Context, c *api.Client, mount, path string, data map[string]any) (int, error) {
	p := cleanMount(mount) + "/data/" + strings.Trim(path, "/")
	secret, err := c.Logical().WriteWithContext(ctx, p, map[string]any{"data": data})
	if err != nil {
		return 0, fmt.Errorf("write kv-v2 %s: %w", p, err)
	}
	if secret == nil || secret.Data == nil {
		return 0, fmt.Errorf("write kv-v2 %s: response has no version", p)
	}
	version, err := jsonInt(secret.Data["version"])
	if err != nil {
		return 0, fmt.Errorf("write kv-v2 %s: read version: %w", p, err)
	}
	return version, nil
}

// WritePolicy creates or replaces an ACL policy.
func WritePolicy(ctx context.Context, c *api.Client, name, hcl string) error {
	if err := c.Sys().PutPolicyWithContext(ctx, name, hcl); err != nil {
		return fmt.Errorf("write policy %s: %w", name, err)
	}
	return nil
}

// DeletePolicy removes an ACL policy.
func DeletePolicy(ctx context.Context, c *api.Client, name string) error {
	if err := c.Sys().DeletePolicyWithContext(ctx, name); err != nil {
		return fmt.Errorf("delete policy %s: %w", name, err)
	}
	return nil
}

// AuthAccessor returns the accessor of the auth method at mount, the name
// templated policies use ({{identity.entity.aliases.<accessor>.name}}).
func AuthAccessor(ctx context.Context, c *api.Client, mount string) (string, error) {
	mounts, err := c.Sys().ListAuthWithContext(ctx)
	if err != nil {
		return "", fmt.Errorf("list auth methods: %w", err)
	}
	m, ok := mounts[cleanMount(mount)+"/"]
	if !ok {
		return "", fmt.Errorf("look up accessor: no auth method at %s", mount)
	}
	return m.Accessor, nil
}

// EnableDatabase mounts a database engine at mount and writes a
// connection. The test server stores the connection without dialing it.
func EnableDatabase(ctx context.Context, c *api.Client, mount string, conn DatabaseConnection) error {
	mount = cleanMount(mount)
	if err := c.Sys().MountWithContext(ctx, mount, &api.MountInput{Type: "database"}); err != nil {
		return fmt.Errorf("enable database engine at %s: %w", mount, err)
	}
	allowed := conn.AllowedRoles
	if len(allowed) == 0 {
		allowed = []string{"*"}
	}
	body := map[string]any{
		"plugin_name":       orDefault(conn.PluginName, "postgresql-database-plugin"),
		"connection_url":    conn.ConnectionURL,
		"allowed_roles":     allowed,
		"verify_connection": conn.VerifyConnection,
	}
	if conn.Username != "" {
		body["username"], body["password"] = conn.Username, conn.Password
	}
	name := orDefault(conn.Name, "db")
	return write(ctx, c, mount+"/config/"+name, body, "write database connection %s", name)
}

// WriteDatabaseRole creates or replaces a dynamic database role.
func WriteDatabaseRole(ctx context.Context, c *api.Client, mount, name string, r DatabaseRole) error {
	body := map[string]any{
		"db_name":             orDefault(r.DBName, "db"),
		"default_ttl":         seconds(r.DefaultTTL),
		"max_ttl":             seconds(r.MaxTTL),
		"creation_statements": r.CreationStatements,
	}
	if len(r.RevocationStatements) > 0 {
		body["revocation_statements"] = r.RevocationStatements
	}
	return write(ctx, c, cleanMount(mount)+"/roles/"+name, body, "write database role %s", name)
}

// EnablePKI mounts a PKI engine with the given max lease TTL (zero keeps
// OpenBao's default), generates an EC root CA with commonName and returns
// the CA certificate in PEM form.
func EnablePKI(ctx context.Context, c *api.Client, mount, commonName string, maxTTL time.Duration) (string, error) {
	mount = cleanMount(mount)
	input := &api.MountInput{Type: "pki"}
	if maxTTL > 0 {
		input.Config.MaxLeaseTTL = fmt.Sprintf("%ds", seconds(maxTTL))
	}
	if err := c.Sys().MountWithContext(ctx, mount, input); err != nil {
		return "", fmt.Errorf("enable pki engine at %s: %w", mount, err)
	}
	body := map[string]any{"common_name": commonName, "key_type": "ec", "key_bits": 256}
	if maxTTL > 0 {
		body["ttl"] = seconds(maxTTL)
	}
	secret, err := c.Logical().WriteWithContext(ctx, mount+"/root/generate/internal", body)
	if err != nil {
		return "", fmt.Errorf("generate root CA at %s: %w", mount, err)
	}
	if secret == nil {
		return "", fmt.Errorf("generate root CA at %s: empty response", mount)
	}
	certPEM, _ := secret.Data["certificate"].(string)
	if certPEM == "" {
		return "", fmt.Errorf("generate root CA at %s: response has no certificate", mount)
	}
	return certPEM, nil
}

// WritePKIRole creates or replaces a PKI role.
func WritePKIRole(ctx context.Context, c *api.Client, mount, name string, r PKIRole) error {
	body := map[string]any{
		"allowed_domains":    r.AllowedDomains,
		"allow_subdomains":   r.AllowSubdomains,
		"allow_bare_domains": r.AllowBareDomains,
		"allow_any_name":     r.AllowAnyName,
		"ttl":                seconds(r.TTL),
		"max_ttl":            seconds(r.MaxTTL),
		"key_type":           orDefault(r.KeyType, "rsa"),
		"key_bits":           r.KeyBits,
		"generate_lease":     r.GenerateLease,
	}
	return write(ctx, c, cleanMount(mount)+"/roles/"+name, body, "write pki role %s", name)
}

// DisableMount unmounts a secrets engine, revoking its leases.
func DisableMount(ctx context.Context, c *api.Client, mount string) error {
	if err := c.Sys().UnmountWithContext(ctx, cleanMount(mount)); err != nil {
		return fmt.Errorf("disable secrets engine %s: %w", mount, err)
	}
	return nil
}

// DisableAuth disables an auth method, revoking its tokens.
func DisableAuth(ctx context.Context, c *api.Client, mount string) error {
	if err := c.Sys().DisableAuthWithContext(ctx, cleanMount(mount)); err != nil {
		return fmt.Errorf("disable auth method %s: %w", mount, err)
	}
	return nil
}

func write(ctx context.Context, c *api.Client, path string, body map[string]any, format string, args ...any) error {
	if _, err := c.Logical().WriteWithContext(ctx, path, body); err != nil {
		return fmt.Errorf(format+": %w", append(args, err)...)
	}
	return nil
}

func cleanMount(mount string) string {
	return strings.Trim(mount, "/")
}

// jsonInt reads a JSON number decoded by the api package (json.Number).
func jsonInt(v any) (int, error) {
	switch n := v.(type) {
	case interface{ Int64() (int64, error) }:
		i, err := n.Int64()
		return int(i), err
	case float64:
		return int(n), nil
	case int:
		return n, nil
	}
	return 0, errors.New("not a number")
}
