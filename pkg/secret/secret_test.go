package secret

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"
)

func TestRedactedEverywhere(t *testing.T) {
	t.Parallel()
	const canary = "canary-7f3a"
	values := map[string]any{"bytes": Bytes(canary), "string": String(canary)}

	for name, v := range values {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			var out bytes.Buffer
			for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"} {
				fmt.Fprintf(&out, verb+"\n", v)
			}
			fmt.Fprintln(&out, v)
			js, err := json.Marshal(map[string]any{"v": v})
			if err != nil {
				t.Fatalf("json.Marshal: %v", err)
			}
			out.Write(js)
			slog.New(slog.NewJSONHandler(&out, nil)).Info("m", "v", v)
			slog.New(slog.NewTextHandler(&out, nil)).Info("m", "v", v)

			if strings.Contains(out.String(), canary) || strings.Contains(out.String(), fmt.Sprintf("%x", canary)) {
				t.Fatalf("output leaks the canary:\n%s", out.String())
			}
			if !strings.Contains(out.String(), redacted) {
				t.Fatalf("output does not say %q:\n%s", redacted, out.String())
			}
		})
	}
}

func TestReveal(t *testing.T) {
	t.Parallel()
	if got := String("v").Reveal(); got != "v" {
		t.Errorf("String.Reveal() = %q, want v", got)
	}
	if got := Bytes("v").Reveal(); string(got) != "v" {
		t.Errorf("Bytes.Reveal() = %q, want v", got)
	}
}
