package baotest

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/google/uuid"
)

// Issuer signs Kubernetes-style service-account JWTs with RS256, like a
// cluster's API server does for projected service-account tokens. It is
// safe for concurrent use.
type Issuer struct {
	url    string
	key    *rsa.PrivateKey
	keyID  string
	pubPEM []byte
	signer jose.Signer
}

// PodIdentity is the pod a service-account token is issued for.
type PodIdentity struct {
	Namespace         string
	ServiceAccount    string
	ServiceAccountUID string
	PodName           string
	PodUID            string
	NodeName          string
	// NodeUID is the node's UID. When empty, a stable UID is derived from
	// NodeName.
	NodeUID string
}

// NewIssuer creates an issuer with a fresh 2048-bit RSA key. issuerURL
// becomes the "iss" claim.
func NewIssuer(issuerURL string) (*Issuer, error) {
	if issuerURL == "" {
		return nil, errors.New("create token issuer: issuer URL is empty")
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("create token issuer: generate key: %w", err)
	}
	der, err := x509.MarshalPKIXPublicKey(key.Public())
	if err != nil {
		return nil, fmt.Errorf("create token issuer: marshal public key: %w", err)
	}

	// Kubernetes uses the unpadded base64url SHA-256 of the DER public key
	// as the key ID.
	sum := sha256.Sum256(der)
	keyID := base64.RawURLEncoding.EncodeToString(sum[:])
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.RS256, Key: key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", keyID),
	)
	if err != nil {
		return nil, fmt.Errorf("create token issuer: create signer: %w", err)
	}
	return &Issuer{
		url:    issuerURL,
		key:    key,
		keyID:  keyID,
		pubPEM: pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der}),
		signer: signer,
	}, nil
}

// URL returns the issuer URL, the "iss" claim of its tokens.
func (i *Issuer) URL() string {
	return i.url
}

// KeyID returns the "kid" header of its tokens.
func (i *Issuer) KeyID() string {
	return i.keyID
}

// PublicKeyPEM returns the PKIX public key in PEM form, as OpenBao's
// jwt_validation_pubkeys and pem_keys expect.
func (i *Issuer) PublicKeyPEM() []byte {
	return append([]byte(nil), i.pubPEM...)
}

// PublicKey returns the verification key.
func (i *Issuer) PublicKey() crypto.PublicKey {
	return i.key.Public()
}

// Sign returns a token for id valid from now for ttl, with the claims of a
// projected service-account token: iss, sub
// ("system:serviceaccount:<namespace>:<name>"), aud, exp, iat, nbf, jti and
// kubernetes.io (namespace, pod, serviceaccount, node).
func (i *Issuer) Sign(id PodIdentity, audiences []string, ttl time.Duration) (string, error) {
	return i.SignAt(id, audiences, time.Now(), ttl)
}

// SignAt is Sign with an explicit issue time, for servers on a test clock.
func (i *Issuer) SignAt(id PodIdentity, audiences []string, issuedAt time.Time, ttl time.Duration) (string, error) {
	if id.Namespace == "" || id.ServiceAccount == "" {
		return "", errors.New("sign service-account token: namespace and service account are required")
	}
	return i.SignClaims(PodClaims(i.url, id, audiences, issuedAt, ttl))
}

// SignClaims signs arbitrary claims, for tests that need a token Sign
// would not produce (wrong issuer, missing claims).
func (i *Issuer) SignClaims(claims map[string]any) (string, error) {
	raw, err := json.Marshal(claims)
	if err != nil {
		return "", fmt.Errorf("sign token: marshal claims: %w", err)
	}
	jws, err := i.signer.Sign(raw)
	if err != nil {
		return "", fmt.Errorf("sign token: %w", err)
	}
	token, err := jws.CompactSerialize()
	if err != nil {
		return "", fmt.Errorf("sign token: serialize: %w", err)
	}
	return token, nil
}

// PodClaims returns the claims Sign puts in a token, for tests that change
// one of them before SignClaims.
func PodClaims(issuerURL string, id PodIdentity, audiences []string, issuedAt time.Time, ttl time.Duration) map[string]any {
	k8s := map[string]any{
		"namespace":      id.Namespace,
		"serviceaccount": map[string]any{"name": id.ServiceAccount, "uid": id.ServiceAccountUID},
	}
	if id.PodName != "" {
		k8s["pod"] = map[string]any{"name": id.PodName, "uid": id.PodUID}
	}
	if id.NodeName != "" {
		uid := id.NodeUID
		if uid == "" {
			uid = uuid.NewHash(sha1.New(), uuid.NameSpaceOID, []byte("node/"+id.NodeName), 5).String()
		}
		k8s["node"] = map[string]any{"name": id.NodeName, "uid": uid}
	}

	aud := make([]any, len(audiences))
	for n, a := range audiences {
		aud[n] = a
	}
	return map[string]any{
		"iss":           issuerURL,
		"sub":           fmt.Sprintf("system:serviceaccount:%s:%s", id.Namespace, id.ServiceAccount),
		"aud":           aud,
		"iat":           issuedAt.Unix(),
		"nbf":           issuedAt.Unix(),
		"exp":           issuedAt.Add(ttl).Unix(),
		"jti":           uuid.NewString(),
		"kubernetes.io": k8s,
	}
}
