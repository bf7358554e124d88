package setup

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/openbao/openbao/api/v2"

	"github.com/phantom-sec/phantom/pkg/baotest"
)

// Environment variables that point the end-to-end run at a real OpenBao
// instead of the baoserver process.
const (
	EnvOpenBaoAddr   = "PHANTOM_OPENBAO_ADDR"
	EnvOpenBaoToken  = "PHANTOM_OPENBAO_TOKEN"
	EnvOpenBaoCACert = "PHANTOM_OPENBAO_CACERT"
)

// Files that cmd/baoserver writes into its directory.
const (
	baoFileAddress   = "address"
	baoFileCA        = "ca.crt"
	baoFileRootToken = "root-token"
)

// Names of what ConfigureOpenBao creates in OpenBao. The chart's defaults
// match them: auth method jwt at auth/jwt, KV version 2 at secret.
const (
	JWTMount      = "jwt"
	KVMount       = "secret"
	DatabaseMount = "database"
	// TenantPolicy is the templated policy of every tenant role: a pod
	// reads only below its own namespace's name.
	TenantPolicy = "phantom-tenant"
	// Audience is the token audience of the chart's CSIDriver default.
	Audience = "openbao"
)

// OpenBao is the OpenBao that the run's phantom-node pods read from.
type OpenBao struct {
	// Address is the URL pods and tests use, https://127.0.0.1:PORT.
	Address string
	// CACertPEM verifies Address; empty means the system roots.
	CACertPEM []byte
	// RootToken may configure anything. It is test infrastructure, never
	// a value delivered to a pod.
	RootToken string
	// TestServer is true for cmd/baoserver, which also serves /e2e/status
	// and has a database engine that needs no database.
	TestServer bool
}

// LoadOpenBao returns the OpenBao named by PHANTOM_OPENBAO_ADDR and
// PHANTOM_OPENBAO_TOKEN (and optionally PHANTOM_OPENBAO_CACERT, a PEM
// file), or else the baoserver whose files are in dir.
func LoadOpenBao(dir string) (*OpenBao, error) {
	if addr := os.Getenv(EnvOpenBaoAddr); addr != "" {
		o := &OpenBao{Address: strings.TrimRight(addr, "/"), RootToken: os.Getenv(EnvOpenBaoToken)}
		if o.RootToken == "" {
			return nil, fmt.Errorf("%s is set but %s is empty: set it to a token that may configure auth methods, mounts and policies", EnvOpenBaoAddr, EnvOpenBaoToken)
		}
		if path := os.Getenv(EnvOpenBaoCACert); path != "" {
			pemData, err := os.ReadFile(path)
			if err != nil {
				return nil, fmt.Errorf("read %s: %w", EnvOpenBaoCACert, err)
			}
			o.CACertPEM = pemData
		}
		return o, nil
	}

	read := func(name string) (string, error) {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			return "", fmt.Errorf("read baoserver file (start tests/e2e/cmd/baoserver -dir %s, or set %s): %w", dir, EnvOpenBaoAddr, err)
		}
		return strings.TrimSpace(string(data)), nil
	}
	addr, err := read(baoFileAddress)
	if err != nil {
		return nil, err
	}
	ca, err := read(baoFileCA)
	if err != nil {
		return nil, err
	}
	token, err := read(baoFileRootToken)
	if err != nil {
		return nil, err
	}
	return &OpenBao{Address: addr, CACertPEM: []byte(ca + "\n"), RootToken: token, TestServer: true}, nil
}

// Client returns an API client with the root token. It ignores the BAO_*
// and VAULT_* environment variables.
func (o *OpenBao) Client() (*api.Client, error) {
	config := api.DefaultConfig()
	config.Address = o.Address
	config.MaxRetries = 0
	config.Timeout = 30 * time.Second
	if len(o.CACertPEM) > 0 {
		if err := config.ConfigureTLS(&api.TLSConfig{CACertBytes: o.CACertPEM}); err != nil {
			return nil, fmt.Errorf("configure OpenBao TLS: %w", err)
		}
	}
	client, err := api.NewClient(config)
	if err != nil {
		return nil, fmt.Errorf("create OpenBao client: %w", err)
	}
	client.SetToken(o.RootToken)
	return client, nil
}

// Status is the state that the baoserver reports at /e2e/status.
type Status struct {
	ActiveLeases  int `json:"activeLeases"`
	DatabaseUsers int `json:"databaseUsers"`
	Tokens        int `json:"tokens"`
}

// ErrNoStatus means the OpenBao is not the baoserver, so no status exists.
var ErrNoStatus = errors.New("lease status needs the baoserver test server")

// Status returns the baoserver's lease and token counts, with the database
// users of DatabaseMount.
func (o *OpenBao) Status(ctx context.Context) (Status, error) {
	if !o.TestServer {
		return Status{}, ErrNoStatus
	}
	client, err := o.httpClient()
	if err != nil {
		return Status{}, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.Address+"/e2e/status?database_mount="+DatabaseMount, nil)
	if err != nil {
		return Status{}, fmt.Errorf("build status request: %w", err)
	}
	req.Header.Set("X-Vault-Token", o.RootToken)
	resp, err := client.Do(req)
	if err != nil {
		return Status{}, fmt.Errorf("get baoserver status: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return Status{}, fmt.Errorf("get baoserver status: HTTP %d: %s", resp.StatusCode, strings.TrimSpace(string(body)))
	}
	var status Status
	if err := json.NewDecoder(resp.Body).Decode(&status); err != nil {
		return Status{}, fmt.Errorf("decode baoserver status: %w", err)
	}
	return status, nil
}

func (o *OpenBao) httpClient() (*http.Client, error) {
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if len(o.CACertPEM) > 0 {
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(o.CACertPEM) {
			return nil, errors.New("OpenBao CA contains no PEM certificate")
		}
		tlsConfig.RootCAs = pool
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfig}}, nil
}

// ClusterTrust is what OpenBao needs to validate the cluster's
// service-account tokens offline.
type ClusterTrust struct {
	// Issuer is the iss claim of the tokens.
	Issuer string
	// PublicKeysPEM are the keys of the issuer's JWKS document, as PEM
	// PUBLIC KEY blocks.
	PublicKeysPEM []string
}

// FetchClusterTrust reads the issuer's OIDC discovery document and JWKS
// anonymously, as an OpenBao outside the cluster would, and converts the
// keys to PEM. caFile verifies the API server.
func FetchClusterTrust(ctx context.Context, issuer, caFile string) (*ClusterTrust, error) {
	caPEM, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("read cluster CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("cluster CA file %s contains no PEM certificate", caFile)
	}
	client := &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}},
	}

	var discovery struct {
		Issuer  string `json:"issuer"`
		JWKSURI string `json:"jwks_uri"`
	}
	if err := getJSON(ctx, client, strings.TrimRight(issuer, "/")+"/.well-known/openid-configuration", &discovery); err != nil {
		return nil, err
	}
	if discovery.Issuer != issuer {
		return nil, fmt.Errorf("discovery document names issuer %q, expected %q", discovery.Issuer, issuer)
	}
	var keySet jose.JSONWebKeySet
	if err := getJSON(ctx, client, discovery.JWKSURI, &keySet); err != nil {
		return nil, err
	}

	trust := &ClusterTrust{Issuer: issuer}
	for _, key := range keySet.Keys {
		der, err := x509.MarshalPKIXPublicKey(key.Key)
		if err != nil {
			return nil, fmt.Errorf("encode JWKS key %s: %w", key.KeyID, err)
		}
		trust.PublicKeysPEM = append(trust.PublicKeysPEM, string(pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})))
	}
	if len(trust.PublicKeysPEM) == 0 {
		return nil, fmt.Errorf("JWKS document %s contains no keys", discovery.JWKSURI)
	}
	return trust, nil
}

func getJSON(ctx context.Context, client *http.Client, url string, into any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return fmt.Errorf("build request for %s: %w", url, err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("get %s: %w", url, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("get %s: HTTP %d (anonymous access needs the system:service-account-issuer-discovery binding that up.sh creates)", url, resp.StatusCode)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(into); err != nil {
		return fmt.Errorf("decode %s: %w", url, err)
	}
	return nil
}

// ConfigureOpenBao prepares OpenBao for the cluster: the JWT auth method
// with the cluster's keys and issuer, a KV version 2 mount, the templated
// tenant policy and, on the baoserver, a database engine. It may run again:
// mounts that exist are kept and the configuration is rewritten.
func ConfigureOpenBao(ctx context.Context, o *OpenBao, trust *ClusterTrust) error {
	client, err := o.Client()
	if err != nil {
		return err
	}

	if err := enableAuth(ctx, client, JWTMount, "jwt"); err != nil {
		return err
	}
	config := map[string]any{
		"jwt_validation_pubkeys": trust.PublicKeysPEM,
		"bound_issuer":           trust.Issuer,
	}
	if _, err := client.Logical().WriteWithContext(ctx, "auth/"+JWTMount+"/config", config); err != nil {
		return fmt.Errorf("configure jwt auth: %w", err)
	}

	if err := enableMount(ctx, client, KVMount, &api.MountInput{Type: "kv", Options: map[string]string{"version": "2"}}); err != nil {
		return err
	}
	if o.TestServer {
		if err := enableMount(ctx, client, DatabaseMount, &api.MountInput{Type: "database"}); err != nil {
			return err
		}
		conn := map[string]any{
			"plugin_name":    "postgresql-database-plugin",
			"connection_url": "postgresql://{{username}}:{{password}}@127.0.0.1:5432/app",
			"allowed_roles":  []string{"*"},
			// The baoserver never dials the database.
			"verify_connection": false,
		}
		if _, err := client.Logical().WriteWithContext(ctx, DatabaseMount+"/config/db", conn); err != nil {
			return fmt.Errorf("write database connection: %w", err)
		}
	}

	accessor, err := baotest.AuthAccessor(ctx, client, JWTMount)
	if err != nil {
		return err
	}
	return baotest.WritePolicy(ctx, client, TenantPolicy, tenantPolicy(accessor))
}

// tenantPolicy lets a token read the KV secrets, database credentials and
// leases of the namespace its JWT login named. The namespace comes from
// the login's alias metadata, which the role's claim_mappings fill from
// the token's kubernetes.io/namespace claim.
func tenantPolicy(accessor string) string {
	ns := "{{identity.entity.aliases." + accessor + ".metadata.namespace}}"
	return fmt.Sprintf(`
path "%[1]s/data/%[2]s/*" {
  capabilities = ["read"]
}
path "%[1]s/metadata/%[2]s/*" {
  capabilities = ["read", "list"]
}
path "%[3]s/creds/%[2]s" {
  capabilities = ["read"]
}
path "sys/leases/renew" {
  capabilities = ["update"]
}
path "sys/leases/revoke/%[3]s/creds/%[2]s/*" {
  capabilities = ["update"]
}
`, KVMount, ns, DatabaseMount)
}

// WriteTenant creates the JWT role <namespace>-<serviceAccount>, the role
// name phantom-node uses when a volume names none. The role accepts only
// tokens of that namespace and service account for Audience.
func WriteTenant(ctx context.Context, o *OpenBao, namespace, serviceAccount string) error {
	client, err := o.Client()
	if err != nil {
		return err
	}
	role := map[string]any{
		"role_type":       "jwt",
		"user_claim":      "sub",
		"bound_audiences": []string{Audience},
		"bound_claims": map[string]any{
			"/kubernetes.io/namespace":           namespace,
			"/kubernetes.io/serviceaccount/name": serviceAccount,
		},
		"claim_mappings": map[string]string{
			"/kubernetes.io/namespace":           "namespace",
			"/kubernetes.io/serviceaccount/name": "service_account",
		},
		"token_policies": []string{TenantPolicy},
		"token_ttl":      600,
		"token_max_ttl":  1200,
	}
	name := namespace + "-" + serviceAccount
	if _, err := client.Logical().WriteWithContext(ctx, "auth/"+JWTMount+"/role/"+name, role); err != nil {
		return fmt.Errorf("write jwt role %s: %w", name, err)
	}
	if !o.TestServer {
		return nil
	}
	dbRole := map[string]any{
		"db_name":             "db",
		"default_ttl":         300,
		"max_ttl":             900,
		"creation_statements": []string{`CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}';`},
	}
	if _, err := client.Logical().WriteWithContext(ctx, DatabaseMount+"/roles/"+namespace, dbRole); err != nil {
		return fmt.Errorf("write database role %s: %w", namespace, err)
	}
	return nil
}

// PutKV writes data as the next version of path on KVMount.
func PutKV(ctx context.Context, o *OpenBao, path string, data map[string]any) error {
	client, err := o.Client()
	if err != nil {
		return err
	}
	_, err = baotest.PutKV2(ctx, client, KVMount, path, data)
	return err
}

func enableAuth(ctx context.Context, client *api.Client, mount, kind string) error {
	auths, err := client.Sys().ListAuthWithContext(ctx)
	if err != nil {
		return fmt.Errorf("list auth methods: %w", err)
	}
	if existing, ok := auths[mount+"/"]; ok {
		if existing.Type != kind {
			return fmt.Errorf("auth/%s is a %s auth method, expected %s: disable it or use another OpenBao", mount, existing.Type, kind)
		}
		return nil
	}
	if err := client.Sys().EnableAuthWithOptionsWithContext(ctx, mount, &api.EnableAuthOptions{Type: kind}); err != nil {
		return fmt.Errorf("enable %s auth at %s: %w", kind, mount, err)
	}
	return nil
}

func enableMount(ctx context.Context, client *api.Client, mount string, input *api.MountInput) error {
	mounts, err := client.Sys().ListMountsWithContext(ctx)
	if err != nil {
		return fmt.Errorf("list secrets engines: %w", err)
	}
	if existing, ok := mounts[mount+"/"]; ok {
		if existing.Type != input.Type {
			return fmt.Errorf("%s/ is a %s engine, expected %s: disable it or use another OpenBao", mount, existing.Type, input.Type)
		}
		return nil
	}
	if err := client.Sys().MountWithContext(ctx, mount, input); err != nil {
		return fmt.Errorf("enable %s engine at %s: %w", input.Type, mount, err)
	}
	return nil
}
