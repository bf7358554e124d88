package satoken

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"

	"github.com/phantom-sec/phantom/pkg/baotest"
	"github.com/phantom-sec/phantom/pkg/secret"
)

var testPod = Pod{Namespace: "payments", Name: "api-0", UID: "uid-1", ServiceAccount: "api"}

func sign(t *testing.T, id baotest.PodIdentity, audiences []string, ttl time.Duration) secret.String {
	t.Helper()
	issuer, err := baotest.NewIssuer("https://kubernetes.default.svc")
	if err != nil {
		t.Fatal(err)
	}
	tok, err := issuer.Sign(id, audiences, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return secret.String(tok)
}

func identity(p Pod) baotest.PodIdentity {
	return baotest.PodIdentity{Namespace: p.Namespace, ServiceAccount: p.ServiceAccount, PodName: p.Name, PodUID: p.UID, NodeName: "node-a"}
}

func TestParseAndCheck(t *testing.T) {
	t.Parallel()
	tok := sign(t, identity(testPod), []string{"openbao"}, 10*time.Minute)

	claims, err := Parse(tok)
	if err != nil {
		t.Fatalf("Parse() = %v", err)
	}
	if claims.PodUID != "uid-1" || claims.NodeName != "node-a" || claims.Subject != "system:serviceaccount:payments:api" {
		t.Errorf("claims = %+v", claims)
	}
	if err := claims.Check(testPod, "openbao", time.Now()); err != nil {
		t.Errorf("Check() = %v, want nil", err)
	}
}

func TestCheckRejects(t *testing.T) {
	t.Parallel()
	other := testPod
	other.UID = "uid-2"
	otherNS := testPod
	otherNS.Namespace = "billing"
	otherSA := testPod
	otherSA.ServiceAccount = "worker"

	tests := []struct {
		name     string
		token    secret.String
		audience string
		now      time.Time
		want     string
	}{
		{"other pod", sign(t, identity(other), []string{"openbao"}, time.Hour), "openbao", time.Now(), `kubernetes.io/pod/uid is "uid-2"`},
		{"other namespace", sign(t, identity(otherNS), []string{"openbao"}, time.Hour), "openbao", time.Now(), "kubernetes.io/namespace"},
		{"other service account", sign(t, identity(otherSA), []string{"openbao"}, time.Hour), "openbao", time.Now(), "serviceaccount/name"},
		{"wrong audience", sign(t, identity(testPod), []string{"vault"}, time.Hour), "openbao", time.Now(), "claim aud"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			claims, err := Parse(tt.token)
			if err != nil {
				t.Fatalf("Parse() = %v", err)
			}
			err = claims.Check(testPod, tt.audience, tt.now)
			if !errors.Is(err, ErrMismatch) {
				t.Fatalf("Check() = %v, want ErrMismatch", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Check() = %q, want it to contain %q", err, tt.want)
			}
		})
	}
}

func TestCheckExpired(t *testing.T) {
	t.Parallel()
	claims, err := Parse(sign(t, identity(testPod), []string{"openbao"}, time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	err = claims.Check(testPod, "openbao", time.Now().Add(time.Hour))
	if !errors.Is(err, ErrExpired) {
		t.Fatalf("Check() = %v, want ErrExpired", err)
	}
	if !strings.Contains(err.Error(), "expired at") || !strings.Contains(err.Error(), "clock") {
		t.Errorf("Check() = %q, want the expiry time and a hint about the clock", err)
	}
}

func TestParseMalformed(t *testing.T) {
	t.Parallel()
	for _, tok := range []string{"", "abc", "a.b.c", "eyJhbGciOiJub25lIn0.eyJzdWIiOiJ4In0."} {
		if _, err := Parse(secret.String(tok)); !errors.Is(err, ErrMalformed) {
			t.Errorf("Parse(%q) = %v, want ErrMalformed", tok, err)
		}
	}
}

func TestFromRequest(t *testing.T) {
	t.Parallel()
	ctxTokens := map[string]string{TokensKey: `{"openbao":{"token":"from-context"}}`}
	secrets := map[string]string{TokensKey: `{"openbao":{"token":"from-secrets"}}`}

	got, err := FromRequest(ctxTokens, nil, "openbao")
	if err != nil || got.Reveal() != "from-context" {
		t.Errorf("FromRequest(context) = %q, %v", got.Reveal(), err)
	}
	got, err = FromRequest(ctxTokens, secrets, "openbao")
	if err != nil || got.Reveal() != "from-secrets" {
		t.Errorf("FromRequest(both) = %q, %v; want the secrets' token", got.Reveal(), err)
	}
	if _, err := FromRequest(nil, nil, "openbao"); !errors.Is(err, ErrNoToken) {
		t.Errorf("FromRequest(none) = %v, want ErrNoToken", err)
	}
	_, err = FromRequest(map[string]string{TokensKey: `{"vault":{"token":"x"}}`}, nil, "openbao")
	if !errors.Is(err, ErrNoToken) || !strings.Contains(err.Error(), `"vault"`) {
		t.Errorf("FromRequest(other audience) = %v, want ErrNoToken naming \"vault\"", err)
	}
	if _, err := FromRequest(map[string]string{TokensKey: "{"}, nil, "openbao"); !errors.Is(err, ErrMalformed) {
		t.Errorf("FromRequest(bad JSON) = %v, want ErrMalformed", err)
	}
}

func TestVerify(t *testing.T) {
	t.Parallel()
	const issuerURL = "https://kubernetes.default.svc"
	cluster, err := baotest.NewIssuer(issuerURL)
	if err != nil {
		t.Fatal(err)
	}
	stranger, err := baotest.NewIssuer(issuerURL)
	if err != nil {
		t.Fatal(err)
	}
	keys := &jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: cluster.PublicKey(), KeyID: cluster.KeyID(), Algorithm: "RS256", Use: "sig"}}}
	signWith := func(i *baotest.Issuer, claims map[string]any) secret.String {
		tok, err := i.SignClaims(claims)
		if err != nil {
			t.Fatal(err)
		}
		return secret.String(tok)
	}
	claims := baotest.PodClaims(issuerURL, identity(testPod), []string{"openbao"}, time.Now(), 10*time.Minute)
	good := signWith(cluster, claims)
	parts := strings.Split(good.Reveal(), ".")
	otherPod := Pod{Namespace: "billing", Name: "w-0", UID: "uid-2", ServiceAccount: "worker"}
	otherPayload := strings.Split(signWith(stranger, baotest.PodClaims(issuerURL, identity(otherPod), []string{"openbao"}, time.Now(), time.Hour)).Reveal(), ".")[1]

	tests := []struct {
		name   string
		token  secret.String
		issuer string
		want   error
	}{
		{"cluster key", good, issuerURL, nil},
		{"issuer not checked", good, "", nil},
		{"other key with the same issuer", signWith(stranger, claims), issuerURL, ErrUnverified},
		{"wrong issuer", good, "https://other.example", ErrUnverified},
		{"payload swapped", secret.String(parts[0] + "." + otherPayload + "." + parts[2]), issuerURL, ErrUnverified},
		{"not a JWT", "x", issuerURL, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := Verify(tt.token, keys, tt.issuer)
			if !errors.Is(err, tt.want) || (tt.want == nil && err != nil) {
				t.Fatalf("Verify() = %v, want %v", err, tt.want)
			}
			if tt.want == nil {
				if err := got.Check(testPod, "openbao", time.Now()); err != nil {
					t.Errorf("Check() after Verify = %v", err)
				}
			}
		})
	}
}
