package bao

import (
	"encoding/json"
	"fmt"
	"time"
)

// sealedSecret is the encoding of a Secret for Phantom's sealed cache. It
// holds secret data, so it is only ever written encrypted.
type sealedSecret struct {
	Data          map[string]any `json:"data"`
	LeaseID       string         `json:"lease_id,omitempty"`
	LeaseDuration time.Duration  `json:"lease_duration,omitempty"`
	Renewable     bool           `json:"renewable,omitempty"`
}

// NewSecret returns a Secret with data, for tests and for callers that
// rebuild a secret they stored.
func NewSecret(data map[string]any, leaseID string, leaseDuration time.Duration, renewable bool) *Secret {
	return &Secret{data: data, LeaseID: leaseID, LeaseDuration: leaseDuration, Renewable: renewable}
}

// EncodeSecret encodes s, data included, as JSON. The result is secret:
// encrypt it before it leaves memory.
func EncodeSecret(s *Secret) ([]byte, error) {
	encoded, err := json.Marshal(sealedSecret{Data: s.data, LeaseID: s.LeaseID, LeaseDuration: s.LeaseDuration, Renewable: s.Renewable})
	if err != nil {
		return nil, fmt.Errorf("encode secret: %w", err)
	}
	return encoded, nil
}

// DecodeSecret decodes the output of EncodeSecret.
func DecodeSecret(encoded []byte) (*Secret, error) {
	var s sealedSecret
	if err := json.Unmarshal(encoded, &s); err != nil {
		return nil, fmt.Errorf("decode secret: %w", err)
	}
	if s.Data == nil {
		return nil, fmt.Errorf("decode secret: no data")
	}
	return &Secret{data: s.Data, LeaseID: s.LeaseID, LeaseDuration: s.LeaseDuration, Renewable: s.Renewable}, nil
}

// WithoutLease returns a copy of s that shares its data but no lease, for
// serving a copy whose lease belongs to another volume.
func (s *Secret) WithoutLease() *Secret {
	return &Secret{data: s.data, Warnings: s.Warnings}
}
