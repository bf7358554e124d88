// Package satoken reads the Kubernetes service-account tokens that kubelet
// hands to a CSI driver, and checks that a token belongs to the pod of the
// request.
//
// Parse decodes a token without signature verification, for requests that
// OpenBao verifies at login: its checks stop a token of one pod from being
// used for another pod before any request leaves the node. Verify also
// checks the signature against the cluster's public keys, for uses that
// OpenBao does not see, such as serving a cached copy.
package satoken

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/phantom-sec/phantom/pkg/secret"
)

// TokensKey is the key under which kubelet passes the tokens requested by
// the CSIDriver's tokenRequests, in the volume context or, with
// serviceAccountTokenInSecrets, in the request's secrets.
const TokensKey = "csi.storage.k8s.io/serviceAccount.tokens"

// Leeway tolerates clock skew between the API server and the node.
const Leeway = 30 * time.Second

var (
	// ErrNoToken means the request carries no token for the audience.
	ErrNoToken = errors.New("no service-account token")
	// ErrMalformed means the token or the tokens attribute cannot be parsed.
	ErrMalformed = errors.New("malformed service-account token")
	// ErrMismatch means the token belongs to another pod, service account
	// or audience.
	ErrMismatch = errors.New("service-account token does not match the pod")
	// ErrExpired means the token is past its expiry or not valid yet.
	ErrExpired = errors.New("service-account token is not valid at this time")
	// ErrUnverified means the token's signature does not verify against
	// any of the given keys, or its issuer is not the expected one.
	ErrUnverified = errors.New("service-account token not verified")
)

var signatureAlgorithms = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512, jose.PS256, jose.PS384, jose.PS512, jose.EdDSA,
}

// Pod is the pod a token must belong to, as kubelet describes it.
type Pod struct {
	Namespace      string
	Name           string
	UID            string
	ServiceAccount string
}

// Claims are the claims of a Kubernetes service-account token.
type Claims struct {
	Issuer            string
	Subject           string
	Audience          []string
	Expiry            time.Time
	NotBefore         time.Time
	Namespace         string
	ServiceAccount    string
	ServiceAccountUID string
	PodName           string
	PodUID            string
	NodeName          string
}

type kubernetesClaims struct {
	Namespace      string `json:"namespace"`
	ServiceAccount struct {
		Name string `json:"name"`
		UID  string `json:"uid"`
	} `json:"serviceaccount"`
	Pod *struct {
		Name string `json:"name"`
		UID  string `json:"uid"`
	} `json:"pod"`
	Node *struct {
		Name string `json:"name"`
	} `json:"node"`
}

// FromRequest returns the token for audience from the tokens JSON that
// kubelet put in the volume context or in the request's secrets. When both
// carry one, the secrets' token is used.
func FromRequest(volumeContext, secrets map[string]string, audience string) (secret.String, error) {
	for _, source := range []struct {
		name   string
		values map[string]string
	}{{"request secrets", secrets}, {"volume context", volumeContext}} {
		raw, ok := source.values[TokensKey]
		if !ok || raw == "" {
			continue
		}
		var tokens map[string]struct {
			Token string `json:"token"`
		}
		if err := json.Unmarshal([]byte(raw), &tokens); err != nil {
			return "", fmt.Errorf("%w: %s key %q is not a JSON object of tokens by audience", ErrMalformed, source.name, TokensKey)
		}
		if t, ok := tokens[audience]; ok && t.Token != "" {
			return secret.String(t.Token), nil
		}
		return "", fmt.Errorf("%w for audience %q: kubelet sent tokens for %s", ErrNoToken, audience, audienceList(tokens))
	}
	return "", fmt.Errorf("%w for audience %q: kubelet sent none", ErrNoToken, audience)
}

// Parse decodes a service-account token's claims without verifying its
// signature.
func Parse(token secret.String) (*Claims, error) {
	parsed, err := jwt.ParseSigned(token.Reveal(), signatureAlgorithms)
	if err != nil {
		return nil, fmt.Errorf("%w: not a signed JWT", ErrMalformed)
	}
	var std jwt.Claims
	var private privateClaims
	if err := parsed.UnsafeClaimsWithoutVerification(&std, &private); err != nil {
		return nil, fmt.Errorf("%w: claims are not valid JSON", ErrMalformed)
	}
	return claimsFrom(std, private)
}

// Verify checks the token's signature against keys, the key chosen by the
// token's "kid" header (every key when it has none), and, unless issuer is
// empty, its "iss" claim. It returns the claims; Check does the rest.
func Verify(token secret.String, keys *jose.JSONWebKeySet, issuer string) (*Claims, error) {
	parsed, err := jwt.ParseSigned(token.Reveal(), signatureAlgorithms)
	if err != nil {
		return nil, fmt.Errorf("%w: not a signed JWT", ErrMalformed)
	}
	kid := parsed.Headers[0].KeyID
	candidates := keys.Keys
	if kid != "" {
		candidates = keys.Key(kid)
	}

	var std jwt.Claims
	var private privateClaims
	verified := false
	for _, key := range candidates {
		if err := parsed.Claims(key.Public().Key, &std, &private); err == nil {
			verified = true
			break
		}
	}
	if !verified {
		return nil, fmt.Errorf("%w: no key of the cluster's %d (key id %q) verifies its signature", ErrUnverified, len(keys.Keys), kid)
	}
	if issuer != "" && std.Issuer != issuer {
		return nil, fmt.Errorf("%w: issuer %q is not the cluster's issuer %q", ErrUnverified, std.Issuer, issuer)
	}
	return claimsFrom(std, private)
}

type privateClaims struct {
	Kubernetes *kubernetesClaims `json:"kubernetes.io"`
}

func claimsFrom(std jwt.Claims, private privateClaims) (*Claims, error) {
	if private.Kubernetes == nil {
		return nil, fmt.Errorf("%w: claim \"kubernetes.io\" is missing; is it a bound service-account token?", ErrMalformed)
	}

	k := private.Kubernetes
	c := &Claims{
		Issuer:            std.Issuer,
		Subject:           std.Subject,
		Audience:          std.Audience,
		Namespace:         k.Namespace,
		ServiceAccount:    k.ServiceAccount.Name,
		ServiceAccountUID: k.ServiceAccount.UID,
	}
	if std.Expiry != nil {
		c.Expiry = std.Expiry.Time()
	}
	if std.NotBefore != nil {
		c.NotBefore = std.NotBefore.Time()
	}
	if k.Pod != nil {
		c.PodName, c.PodUID = k.Pod.Name, k.Pod.UID
	}
	if k.Node != nil {
		c.NodeName = k.Node.Name
	}
	return c, nil
}

// Check verifies that the claims name pod, carry audience and are valid at
// now. Errors name the claim and both values, which are identifiers, not
// secrets.
func (c *Claims) Check(pod Pod, audience string, now time.Time) error {
	var problems []string
	mismatch := func(claim, got, want string) {
		problems = append(problems, fmt.Sprintf("claim %s is %q, want %q", claim, got, want))
	}

	if c.Namespace != pod.Namespace {
		mismatch("kubernetes.io/namespace", c.Namespace, pod.Namespace)
	}
	if c.ServiceAccount != pod.ServiceAccount {
		mismatch("kubernetes.io/serviceaccount/name", c.ServiceAccount, pod.ServiceAccount)
	}
	if wantSubject := "system:serviceaccount:" + pod.Namespace + ":" + pod.ServiceAccount; c.Subject != wantSubject {
		mismatch("sub", c.Subject, wantSubject)
	}
	if c.PodName != pod.Name {
		mismatch("kubernetes.io/pod/name", c.PodName, pod.Name)
	}
	if c.PodUID != pod.UID {
		mismatch("kubernetes.io/pod/uid", c.PodUID, pod.UID)
	}
	if !slices.Contains(c.Audience, audience) {
		problems = append(problems, fmt.Sprintf("claim aud is %q, want it to contain %q", c.Audience, audience))
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %s", ErrMismatch, strings.Join(problems, "; "))
	}

	// Kubelet refreshes tokens well before expiry, so an expired token
	// usually means the node's clock is off.
	if c.Expiry.IsZero() || !now.Before(c.Expiry.Add(Leeway)) {
		return fmt.Errorf("%w: it expired at %s (node time %s): check the node's clock",
			ErrExpired, c.Expiry.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	if !c.NotBefore.IsZero() && now.Add(Leeway).Before(c.NotBefore) {
		return fmt.Errorf("%w: it is valid from %s (node time %s): check the node's clock",
			ErrExpired, c.NotBefore.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return nil
}

func audienceList[V any](tokens map[string]V) string {
	if len(tokens) == 0 {
		return "no audience"
	}
	names := make([]string, 0, len(tokens))
	for name := range tokens {
		names = append(names, fmt.Sprintf("%q", name))
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}
