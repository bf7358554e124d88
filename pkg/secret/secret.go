// Package secret holds types for secret values and tokens that print as
// "[redacted]" in every formatting path: fmt verbs, slog and JSON. Code that
// needs the value calls Reveal, which makes each use easy to find.
package secret

import (
	"fmt"
	"log/slog"
)

const redacted = "[redacted]"

// Bytes is a secret value, such as the content of a secret file.
type Bytes []byte

// Reveal returns the value.
func (b Bytes) Reveal() []byte { return b }

func (Bytes) String() string                { return redacted }
func (Bytes) GoString() string              { return redacted }
func (Bytes) LogValue() slog.Value          { return slog.StringValue(redacted) }
func (Bytes) MarshalJSON() ([]byte, error)  { return []byte(`"` + redacted + `"`), nil }
func (Bytes) MarshalText() ([]byte, error)  { return []byte(redacted), nil }
func (Bytes) Format(f fmt.State, verb rune) { _, _ = f.Write([]byte(redacted)) }

// String is a secret string, such as an OpenBao token or a service-account
// token.
type String string

// Reveal returns the value.
func (s String) Reveal() string { return string(s) }

func (String) String() string                { return redacted }
func (String) GoString() string              { return redacted }
func (String) LogValue() slog.Value          { return slog.StringValue(redacted) }
func (String) MarshalJSON() ([]byte, error)  { return []byte(`"` + redacted + `"`), nil }
func (String) MarshalText() ([]byte, error)  { return []byte(redacted), nil }
func (String) Format(f fmt.State, verb rune) { _, _ = f.Write([]byte(redacted)) }
