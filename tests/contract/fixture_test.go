package contract

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/openbao/openbao/api/v2"

	"github.com/phantom-sec/phantom/pkg/baotest"
)

const (
	issuerURL = "https://kubernetes.default.svc.cluster.local"
	audience  = "openbao"
	// tokenTTL is the TTL of tokens from tenant logins.
	tokenTTL = 15 * time.Minute
	// Database role TTLs, as in the recordings.
	dbDefaultTTL = 2 * time.Minute
	dbMaxTTL     = 6 * time.Minute
)

// fixture is what the suite provisions once per run, with unique names.
type fixture struct {
	suffix      string
	jwtMount    string
	k8sMount    string
	kvMount     string
	dbMount     string
	pkiMount    string
	policy      string
	jwtAccessor string
	// database is false when the target cannot issue database credentials.
	database bool
	issuer   *baotest.Issuer
	stranger *baotest.Issuer // same issuer URL, another key
	cleanups []func(ctx context.Context, c *api.Client) error
}

// tenant is one namespace with its JWT role and a service account.
type tenant struct {
	role string
	pod  baotest.PodIdentity
}

var (
	payments = tenant{role: "payments", pod: baotest.PodIdentity{
		Namespace: "payments", ServiceAccount: "api", ServiceAccountUID: "5b0c8a52-0000-4000-8000-0000000000a1",
		PodName: "api-0", PodUID: "6f1c2c7e-0000-4000-8000-000000000001", NodeName: "node-1",
	}}
	billing = tenant{role: "billing", pod: baotest.PodIdentity{
		Namespace: "billing", ServiceAccount: "worker", ServiceAccountUID: "5b0c8a52-0000-4000-8000-0000000000b2",
		PodName: "worker-0", PodUID: "6f1c2c7e-0000-4000-8000-000000000002", NodeName: "node-1",
	}}
)

func newFixture(ctx context.Context, tgt *target) (*fixture, error) {
	sfx := randomSuffix()
	f := &fixture{
		suffix:   sfx,
		jwtMount: "jwt-" + sfx,
		k8sMount: "k8s-" + sfx,
		kvMount:  "kv-" + sfx,
		dbMount:  "db-" + sfx,
		pkiMount: "pki-" + sfx,
		policy:   "tenant-" + sfx,
	}
	c, err := tgt.newClient(tgt.rootToken)
	if err != nil {
		return nil, err
	}
	if f.issuer, err = baotest.NewIssuer(issuerURL); err != nil {
		return nil, err
	}
	if f.stranger, err = baotest.NewIssuer(issuerURL); err != nil {
		return nil, err
	}

	steps := []func(context.Context, *api.Client) error{f.setupJWT, f.setupKV, f.setupPolicy, f.setupPKI, f.setupDatabase}
	if tgt.isTestServer() {
		steps = append(steps, f.setupKubernetes)
	}
	for _, step := range steps {
		if err := step(ctx, c); err != nil {
			f.cleanup(ctx)
			return nil, err
		}
	}
	return f, nil
}

func (f *fixture) setupJWT(ctx context.Context, c *api.Client) error {
	if err := baotest.EnableJWTAuth(ctx, c, f.jwtMount, issuerURL, f.issuer.PublicKeyPEM()); err != nil {
		return err
	}
	f.cleanups = append(f.cleanups, func(ctx context.Context, c *api.Client) error { return baotest.DisableAuth(ctx, c, f.jwtMount) })

	for _, tn := range []tenant{payments, billing} {
		err := baotest.WriteJWTRole(ctx, c, f.jwtMount, tn.role, baotest.JWTRole{
			BoundAudiences: []string{audience},
			BoundClaims:    map[string]any{"/kubernetes.io/namespace": []any{tn.pod.Namespace}},
			ClaimMappings: map[string]string{
				"/kubernetes.io/namespace": "namespace",
				"/kubernetes.io/pod/name":  "pod",
				"/kubernetes.io/pod/uid":   "pod_uid",
			},
			TokenPolicies: []string{f.policy},
			TokenTTL:      tokenTTL,
			TokenMaxTTL:   time.Hour,
		})
		if err != nil {
			return err
		}
	}

	var err error
	f.jwtAccessor, err = baotest.AuthAccessor(ctx, c, f.jwtMount)
	return err
}

func (f *fixture) setupKV(ctx context.Context, c *api.Client) error {
	if err := baotest.EnableKV2(ctx, c, f.kvMount); err != nil {
		return err
	}
	f.cleanups = append(f.cleanups, func(ctx context.Context, c *api.Client) error { return baotest.DisableMount(ctx, c, f.kvMount) })

	secrets := map[string]map[string]any{
		"payments/db":         {"username": "app-payments", "password": "payments-canary"},
		"payments/api/config": {"endpoint": "https://payments.example"},
		"billing/db":          {"username": "app-billing", "password": "billing-canary"},
	}
	for path, data := range secrets {
		if _, err := baotest.PutKV2(ctx, c, f.kvMount, path, data); err != nil {
			return err
		}
	}
	return nil
}

// setupPolicy writes one templated policy shared by both tenants: each
// reaches only the KV paths named after its namespace.
func (f *fixture) setupPolicy(ctx context.Context, c *api.Client) error {
	ns := fmt.Sprintf("{{identity.entity.aliases.%s.metadata.namespace}}", f.jwtAccessor)
	hcl := strings.Join([]string{
		fmt.Sprintf(`path "%s/data/%s/*" { capabilities = ["read"] }`, f.kvMount, ns),
		fmt.Sprintf(`path "%s/metadata/%s/*" { capabilities = ["read", "list"] }`, f.kvMount, ns),
		fmt.Sprintf(`path "%s/creds/app" { capabilities = ["read"] }`, f.dbMount),
		fmt.Sprintf(`path "%s/issue/app" { capabilities = ["update"] }`, f.pkiMount),
		`path "sys/leases/revoke" { capabilities = ["update"] }`,
	}, "\n")
	if err := baotest.WritePolicy(ctx, c, f.policy, hcl); err != nil {
		return err
	}
	f.cleanups = append(f.cleanups, func(ctx context.Context, c *api.Client) error { return baotest.DeletePolicy(ctx, c, f.policy) })
	return nil
}

func (f *fixture) setupPKI(ctx context.Context, c *api.Client) error {
	if _, err := baotest.EnablePKI(ctx, c, f.pkiMount, "Phantom Contract CA "+f.suffix, 24*time.Hour); err != nil {
		return err
	}
	f.cleanups = append(f.cleanups, func(ctx context.Context, c *api.Client) error { return baotest.DisableMount(ctx, c, f.pkiMount) })
	return baotest.WritePKIRole(ctx, c, f.pkiMount, "app", baotest.PKIRole{
		AllowedDomains:  []string{"svc.cluster.local"},
		AllowSubdomains: true,
		TTL:             time.Hour,
		MaxTTL:          2 * time.Hour,
		KeyType:         "ec",
		KeyBits:         256,
	})
}

// setupDatabase mounts the database engine. A real OpenBao needs a
// PostgreSQL it can reach; without one the database cases skip.
func (f *fixture) setupDatabase(ctx context.Context, c *api.Client) error {
	url := os.Getenv(envPostgres)
	if url == "" && !tg.isTestServer() {
		return nil
	}
	if url == "" {
		url = "postgresql://{{username}}:{{password}}@127.0.0.1:5432/app?sslmode=disable"
	}
	conn := baotest.DatabaseConnection{ConnectionURL: url, VerifyConnection: !tg.isTestServer()}
	if err := baotest.EnableDatabase(ctx, c, f.dbMount, conn); err != nil {
		return err
	}
	f.cleanups = append(f.cleanups, func(ctx context.Context, c *api.Client) error { return baotest.DisableMount(ctx, c, f.dbMount) })
	f.database = true
	return baotest.WriteDatabaseRole(ctx, c, f.dbMount, "app", baotest.DatabaseRole{
		DefaultTTL: dbDefaultTTL,
		MaxTTL:     dbMaxTTL,
		CreationStatements: []string{
			`CREATE ROLE "{{name}}" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';`,
		},
	})
}

func (f *fixture) setupKubernetes(ctx context.Context, c *api.Client) error {
	err := baotest.EnableKubernetesAuth(ctx, c, f.k8sMount, baotest.KubernetesConfig{
		Host:    "https://127.0.0.1:6443",
		PEMKeys: [][]byte{f.issuer.PublicKeyPEM()},
		Issuer:  issuerURL,
	})
	if err != nil {
		return err
	}
	f.cleanups = append(f.cleanups, func(ctx context.Context, c *api.Client) error { return baotest.DisableAuth(ctx, c, f.k8sMount) })
	return baotest.WriteKubernetesRole(ctx, c, f.k8sMount, "payments", baotest.KubernetesRole{
		ServiceAccountNames:      []string{"api"},
		ServiceAccountNamespaces: []string{"payments"},
		Audience:                 audience,
		TokenPolicies:            []string{f.policy},
		TokenTTL:                 tokenTTL,
	})
}

// cleanup removes everything the fixture created, newest first.
func (f *fixture) cleanup(ctx context.Context) {
	c, err := tg.newClient(tg.rootToken)
	if err != nil {
		fmt.Fprintf(os.Stderr, "contract: clean up: %v\n", err)
		return
	}
	var errs []error
	for i := len(f.cleanups) - 1; i >= 0; i-- {
		errs = append(errs, f.cleanups[i](ctx, c))
	}
	if err := errors.Join(errs...); err != nil {
		fmt.Fprintf(os.Stderr, "contract: clean up: %v\n", err)
	}
}

// jwtFor signs a service-account token for pod at the target's time.
func jwtFor(t *testing.T, pod baotest.PodIdentity) string {
	t.Helper()
	tok, err := fx.issuer.SignAt(pod, []string{audience}, tg.now(), 10*time.Minute)
	if err != nil {
		t.Fatalf("sign token: %v", err)
	}
	return tok
}

// loginSecret logs a tenant in through the JWT mount.
func loginSecret(t *testing.T, tn tenant) *api.Secret {
	t.Helper()
	secret, err := client(t, "").Logical().WriteWithContext(context.Background(),
		"auth/"+fx.jwtMount+"/login", map[string]any{"role": tn.role, "jwt": jwtFor(t, tn.pod)})
	if err != nil {
		t.Fatalf("log in as %s: %v", tn.role, err)
	}
	if secret == nil || secret.Auth == nil {
		t.Fatalf("log in as %s: response has no auth", tn.role)
	}
	return secret
}

// login returns a client holding a tenant's OpenBao token.
func login(t *testing.T, tn tenant) *api.Client {
	t.Helper()
	return client(t, loginSecret(t, tn).Auth.ClientToken)
}
