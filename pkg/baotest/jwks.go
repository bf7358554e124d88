package baotest

import (
	"encoding/json"

	"github.com/go-jose/go-jose/v4"
)

// JWKS returns the issuer's public key as a JSON Web Key Set, as the API
// server serves it at /openid/v1/jwks.
func (i *Issuer) JWKS() []byte {
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: i.key.Public(), KeyID: i.keyID, Algorithm: string(jose.RS256), Use: "sig"}}}
	raw, err := json.Marshal(set)
	if err != nil {
		// An RSA public key always encodes.
		panic("baotest: encode JWKS: " + err.Error())
	}
	return raw
}
