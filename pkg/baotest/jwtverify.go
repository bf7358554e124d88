package baotest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// defaultClockSkew is the leeway applied to exp, nbf and iat when a role
// sets none (OpenBao uses go-jose's default of one minute).
const defaultClockSkew = time.Minute

// defaultMissingClaimLeeway is the leeway used to derive a missing exp or
// nbf from the other time claims (150 seconds in OpenBao).
const defaultMissingClaimLeeway = 150 * time.Second

// signatureAlgs are the JWS algorithms the parser accepts; which of them a
// role allows is checked after verification, as OpenBao does.
var signatureAlgs = []jose.SignatureAlgorithm{
	jose.RS256, jose.RS384, jose.RS512, jose.ES256, jose.ES384, jose.ES512,
	jose.PS256, jose.PS384, jose.PS512, jose.EdDSA, jose.HS256, jose.HS384, jose.HS512,
}

// expectations are the checks applied to a verified token.
type expectations struct {
	issuer       string
	subject      string
	audiences    []string
	algorithms   []string
	notBefore    time.Duration // leeway to derive a missing nbf; <0 disables
	expiration   time.Duration // leeway to derive a missing exp; <0 disables
	clockSkew    time.Duration // leeway on all time claims; <0 disables
	allowNoTimes bool          // accept a token with no exp, nbf or iat
	now          time.Time
	publicKeys   []crypto.PublicKey
}

// verifyJWT checks the signature of raw against the public keys, then its
// algorithm, issuer, subject, audience and times. Error texts match those
// of OpenBao 2.6 (hashicorp/cap), without the "error validating token: "
// prefix the callers add.
func verifyJWT(raw string, exp expectations) (map[string]any, error) {
	jws, err := jose.ParseSigned(raw, signatureAlgs)
	if err != nil {
		return nil, fmt.Errorf("error verifying token signature: %w", err)
	}
	payload, err := verifySignature(jws, exp.publicKeys)
	if err != nil {
		return nil, fmt.Errorf("error verifying token signature: %w", err)
	}
	if err := checkAlgorithm(jws, exp.algorithms); err != nil {
		return nil, fmt.Errorf("invalid algorithm (alg) header parameter: %w", err)
	}

	claims := map[string]any{}
	if err := json.Unmarshal(payload, &claims); err != nil {
		return nil, fmt.Errorf("error verifying token signature: %w", err)
	}
	if err := checkRegisteredClaims(claims, exp); err != nil {
		return nil, err
	}
	if err := checkTimes(claims, exp); err != nil {
		return nil, err
	}
	return claims, nil
}

var errNoKeyValidated = errors.New("no known key successfully validated the token signature")

func verifySignature(jws *jose.JSONWebSignature, keys []crypto.PublicKey) ([]byte, error) {
	for _, key := range keys {
		if payload, err := jws.Verify(key); err == nil {
			return payload, nil
		}
	}
	return nil, errNoKeyValidated
}

func checkAlgorithm(jws *jose.JSONWebSignature, allowed []string) error {
	if len(jws.Signatures) != 1 {
		return errors.New("token with multiple signatures not supported")
	}
	if len(allowed) == 0 {
		allowed = []string{"RS256"}
	}
	if !slices.Contains(allowed, jws.Signatures[0].Header.Algorithm) {
		return errors.New("token signed with unexpected algorithm")
	}
	return nil
}

func checkRegisteredClaims(claims map[string]any, exp expectations) error {
	iss, _ := claims["iss"].(string)
	if exp.issuer != "" && exp.issuer != iss {
		return errors.New("invalid issuer (iss) claim")
	}
	sub, _ := claims["sub"].(string)
	if exp.subject != "" && exp.subject != sub {
		return errors.New("invalid subject (sub) claim")
	}

	aud, err := audienceClaim(claims)
	if err != nil {
		return err
	}
	if len(exp.audiences) > 0 && !slices.ContainsFunc(exp.audiences, func(a string) bool { return slices.Contains(aud, a) }) {
		return errors.New("invalid audience (aud) claim: audience claim does not match any expected audience")
	}
	return nil
}

// audienceClaim reads "aud", a string or a list of strings.
func audienceClaim(claims map[string]any) ([]string, error) {
	switch v := claims["aud"].(type) {
	case nil:
		return nil, nil
	case string:
		return []string{v}, nil
	case []any:
		out := make([]string, 0, len(v))
		for _, item := range v {
			s, ok := item.(string)
			if !ok {
				return nil, errors.New("go-jose/go-jose/jwt: expected string or array value to unmarshal to Audience")
			}
			out = append(out, s)
		}
		return out, nil
	default:
		return nil, errors.New("go-jose/go-jose/jwt: expected string or array value to unmarshal to Audience")
	}
}

// checkTimes applies OpenBao's time rules. At least one of exp, nbf and iat
// is required, and a missing exp or nbf is derived from the others. All
// three are then checked with the clock-skew leeway.
func checkTimes(claims map[string]any, exp expectations) error {
	iat, nbf, expiry := numericClaim(claims["iat"]), numericClaim(claims["nbf"]), numericClaim(claims["exp"])
	if iat == 0 && nbf == 0 && expiry == 0 {
		if exp.allowNoTimes {
			return nil
		}
		return errors.New("no issued at (iat), not before (nbf), or expiration time (exp) claims in token")
	}

	if expiry == 0 {
		expiry = max(iat, nbf) + int64(leeway(exp.expiration, defaultMissingClaimLeeway)/time.Second)
	}
	if nbf == 0 {
		if iat != 0 {
			nbf = iat
		} else {
			nbf = expiry - int64(leeway(exp.notBefore, defaultMissingClaimLeeway)/time.Second)
		}
	}

	skew := leeway(exp.clockSkew, defaultClockSkew)
	switch {
	case exp.now.Add(skew).Before(time.Unix(nbf, 0)):
		return errors.New("invalid not before (nbf) claim: token not yet valid")
	case exp.now.Add(-skew).After(time.Unix(expiry, 0)):
		return errors.New("invalid expiration time (exp) claim: token is expired")
	case iat != 0 && exp.now.Add(skew).Before(time.Unix(iat, 0)):
		return errors.New("invalid issued at (iat) claim: token issued in the future")
	}
	return nil
}

// leeway maps a configured leeway to its effective value: zero means the
// default, negative means none.
func leeway(configured, def time.Duration) time.Duration {
	switch {
	case configured < 0:
		return 0
	case configured == 0:
		return def
	default:
		return configured
	}
}

// numericClaim reads a NumericDate claim, truncating fractions.
func numericClaim(v any) int64 {
	if f, ok := v.(float64); ok {
		return int64(f)
	}
	return 0
}

// claimValue returns a claim by name, or by JSON pointer when the name
// starts with "/" ("/kubernetes.io/namespace"). Numbers come back as
// json.Number of their integer part, so they compare with role values.
func claimValue(claims map[string]any, name string) any {
	var v any
	if !strings.HasPrefix(name, "/") {
		v = claims[name]
	} else {
		v = jsonPointer(claims, name)
	}
	if f, ok := v.(float64); ok {
		return json.Number(strconv.Itoa(int(f)))
	}
	return v
}

// jsonPointer resolves an RFC 6901 pointer in decoded JSON, or returns nil.
func jsonPointer(doc any, pointer string) any {
	cur := doc
	for _, token := range strings.Split(pointer, "/")[1:] {
		token = strings.ReplaceAll(strings.ReplaceAll(token, "~1", "/"), "~0", "~")
		switch node := cur.(type) {
		case map[string]any:
			cur = node[token]
		case []any:
			i, err := strconv.Atoi(token)
			if err != nil || i < 0 || i >= len(node) {
				return nil
			}
			cur = node[i]
		default:
			return nil
		}
	}
	return cur
}

// parsePublicKeyPEM parses one PEM public key or certificate, RSA, ECDSA
// or Ed25519.
func parsePublicKeyPEM(data string) (crypto.PublicKey, error) {
	block, _ := pem.Decode([]byte(data))
	if block == nil {
		return nil, errors.New("data does not contain any valid RSA or ECDSA public keys")
	}
	key, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		cert, certErr := x509.ParseCertificate(block.Bytes)
		if certErr != nil {
			return nil, err
		}
		key = cert.PublicKey
	}
	switch key.(type) {
	case *rsa.PublicKey, *ecdsa.PublicKey, ed25519.PublicKey:
		return key, nil
	}
	return nil, errors.New("data does not contain any valid RSA or ECDSA public keys")
}
