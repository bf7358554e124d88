package bao

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/openbao/openbao/api/v2"

	"github.com/phantom-sec/phantom/pkg/secret"
)

// Session makes requests with one OpenBao token, obtained by Login.
type Session struct {
	client *Client
	api    *api.Client
	login  *Login
}

// Secret is a secret read from OpenBao. Its fields are reachable only
// through Field and JSON, and it prints as "[redacted]".
type Secret struct {
	data          map[string]any
	LeaseID       string
	LeaseDuration time.Duration
	Renewable     bool
	Warnings      []string
}

// NewSession returns a session that uses the token of login.
func (c *Client) NewSession(login *Login) (*Session, error) {
	clone, err := c.base.Clone()
	if err != nil {
		return nil, fmt.Errorf("clone OpenBao client: %w", err)
	}
	clone.SetToken(login.Token.Reveal())
	return &Session{client: c, api: clone, login: login}, nil
}

// Login returns the login the session was made from.
func (s *Session) Login() *Login { return s.login }

// ReadKV reads the latest version of a KV v2 secret.
func (s *Session) ReadKV(ctx context.Context, mount, path string) (*Secret, error) {
	apiPath := kvPath(mount, "data", path)
	var raw *api.Secret
	err := s.client.do(ctx, opRead, func(ctx context.Context) error {
		var err error
		raw, err = s.api.Logical().ReadWithContext(ctx, apiPath)
		if err == nil && raw == nil {
			return fmt.Errorf("%w (HTTP %d)", ErrNotFound, http.StatusNotFound)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", apiPath, err)
	}

	inner, ok := raw.Data["data"].(map[string]any)
	if !ok {
		// A deleted or destroyed version has "data": null.
		return nil, fmt.Errorf("read %s: %w: the latest version is deleted", apiPath, ErrNotFound)
	}
	return &Secret{data: inner, Warnings: raw.Warnings}, nil
}

// ListKV lists the keys under a KV v2 folder. Folder keys end with "/".
func (s *Session) ListKV(ctx context.Context, mount, path string) ([]string, error) {
	apiPath := kvPath(mount, "metadata", path)
	var raw *api.Secret
	err := s.client.do(ctx, opList, func(ctx context.Context) error {
		var err error
		raw, err = s.api.Logical().ListWithContext(ctx, apiPath)
		if err == nil && raw == nil {
			return fmt.Errorf("%w (HTTP %d)", ErrNotFound, http.StatusNotFound)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", apiPath, err)
	}

	rawKeys, _ := raw.Data["keys"].([]any)
	keys := make([]string, 0, len(rawKeys))
	for _, k := range rawKeys {
		if key, ok := k.(string); ok {
			keys = append(keys, key)
		}
	}
	sort.Strings(keys)
	return keys, nil
}

// ReadDynamic reads a secret from a dynamic engine. Without data it sends a
// GET (`database/creds/app`); with data it writes them (`pki/issue/web`).
func (s *Session) ReadDynamic(ctx context.Context, path string, data map[string]any) (*Secret, error) {
	var raw *api.Secret
	err := s.client.do(ctx, opRead, func(ctx context.Context) error {
		var err error
		if len(data) == 0 {
			raw, err = s.api.Logical().ReadWithContext(ctx, path)
		} else {
			raw, err = s.api.Logical().WriteWithContext(ctx, path, data)
		}
		if err == nil && raw == nil {
			return fmt.Errorf("%w (HTTP %d)", ErrNotFound, http.StatusNotFound)
		}
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return &Secret{
		data:          raw.Data,
		LeaseID:       raw.LeaseID,
		LeaseDuration: time.Duration(raw.LeaseDuration) * time.Second,
		Renewable:     raw.Renewable,
		Warnings:      raw.Warnings,
	}, nil
}

// RenewLease extends a lease by increment and returns the lease duration
// OpenBao granted, which is shorter near the lease's max TTL.
func (s *Session) RenewLease(ctx context.Context, leaseID string, increment time.Duration) (time.Duration, error) {
	var raw *api.Secret
	err := s.client.do(ctx, opRenew, func(ctx context.Context) error {
		var err error
		raw, err = s.api.Sys().RenewWithContext(ctx, leaseID, int(increment.Seconds()))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("renew lease %s: %w", leaseID, err)
	}
	if raw == nil {
		return 0, fmt.Errorf("renew lease %s: %w: empty response", leaseID, ErrUnavailable)
	}
	return time.Duration(raw.LeaseDuration) * time.Second, nil
}

// RenewSelf renews the session's own token by increment (zero: the
// token's configured TTL) and returns the TTL OpenBao granted, which is
// shorter near the token's max TTL.
func (s *Session) RenewSelf(ctx context.Context, increment time.Duration) (time.Duration, error) {
	var raw *api.Secret
	err := s.client.do(ctx, opRenewToken, func(ctx context.Context) error {
		var err error
		raw, err = s.api.Auth().Token().RenewSelfWithContext(ctx, int(increment.Seconds()))
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("renew OpenBao token of %s: %w", s.login.Accessor, err)
	}
	if raw == nil || raw.Auth == nil {
		return 0, fmt.Errorf("renew OpenBao token of %s: %w: response has no auth", s.login.Accessor, ErrUnavailable)
	}
	return time.Duration(raw.Auth.LeaseDuration) * time.Second, nil
}

// RevokeLease revokes a lease. It puts the lease id in the URL
// (sys/leases/revoke/<lease id>), so a policy can allow a pod to revoke
// only the leases of its own paths, such as
// `path "sys/leases/revoke/database/creds/payments/*"`. Revoking an
// unknown lease succeeds, as in OpenBao.
func (s *Session) RevokeLease(ctx context.Context, leaseID string) error {
	err := s.client.do(ctx, opRevoke, func(ctx context.Context) error {
		_, err := s.api.Logical().WriteWithContext(ctx, "sys/leases/revoke/"+leaseID, nil)
		return err
	})
	if err != nil {
		return fmt.Errorf("revoke lease %s: %w", leaseID, err)
	}
	return nil
}

// Fields returns the secret's field names, sorted.
func (s *Secret) Fields() []string {
	names := make([]string, 0, len(s.data))
	for name := range s.data {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}

// Field returns one field as file content: strings as they are, any other
// JSON value encoded as JSON.
func (s *Secret) Field(name string) (secret.Bytes, bool) {
	v, ok := s.data[name]
	if !ok {
		return nil, false
	}
	if str, ok := v.(string); ok {
		return secret.Bytes(str), true
	}
	encoded, err := json.Marshal(v)
	if err != nil {
		return nil, false
	}
	return secret.Bytes(encoded), true
}

// JSON returns every field as one JSON object.
func (s *Secret) JSON() (secret.Bytes, error) {
	encoded, err := json.MarshalIndent(s.data, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encode secret as JSON: %w", err)
	}
	return secret.Bytes(append(encoded, '\n')), nil
}

func (*Secret) String() string { return "[redacted]" }

// LogValue keeps the lease id, never the data.
func (s *Secret) LogValue() slog.Value {
	return slog.GroupValue(slog.String("lease_id", s.LeaseID), slog.Int("fields", len(s.data)))
}

func kvPath(mount, kind, path string) string {
	return strings.Trim(mount, "/") + "/" + kind + "/" + strings.Trim(path, "/")
}
