package spec

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseValid(t *testing.T) {
	t.Parallel()
	attrs := map[string]string{
		AttrSecrets: `
- path: payments/db
  field: password
  file: db/password
  mode: "0400"
- path: payments/api
  dir: api
- path: payments/tls
  format: json
- path: database/creds/app
  type: dynamic
  file: db.json
  format: json
- path: pki/issue/web
  type: dynamic
  data: {common_name: web.payments.svc, ttl: 1h}
  dir: tls
`,
		AttrRole:              "payments",
		AttrFileMode:          "0444",
		AttrSizeLimit:         "2Mi",
		AttrRefreshInterval:   "2m",
		KubeletPodName:        "api-0",
		KubeletServiceAccount: "api",
	}

	got, err := Parse(attrs)
	if err != nil {
		t.Fatalf("Parse() error = %v", err)
	}

	want := []Item{
		{Path: "payments/db", Type: TypeKV, Field: "password", File: "db/password", Mode: "0400"},
		{Path: "payments/api", Type: TypeKV, Dir: "api", Format: FormatFields},
		{Path: "payments/tls", Type: TypeKV, Format: FormatJSON, File: "tls.json"},
		{Path: "database/creds/app", Type: TypeDynamic, Format: FormatJSON, File: "db.json"},
		{Path: "pki/issue/web", Type: TypeDynamic, Format: FormatFields, Dir: "tls",
			Data: map[string]any{"common_name": "web.payments.svc", "ttl": "1h"}},
	}
	if diff := cmp.Diff(want, got.Items); diff != "" {
		t.Errorf("items mismatch (-want +got):\n%s", diff)
	}
	if got.Role != "payments" {
		t.Errorf("Role = %q, want payments", got.Role)
	}
	if got.FileMode != 0o444 {
		t.Errorf("FileMode = %o, want 444", got.FileMode)
	}
	if got.SizeLimit != 2<<20 {
		t.Errorf("SizeLimit = %d, want %d", got.SizeLimit, 2<<20)
	}
	if got.ItemMode(got.Items[0]) != 0o400 {
		t.Errorf("ItemMode(items[0]) = %o, want 400", got.ItemMode(got.Items[0]))
	}
	if got.ItemMode(got.Items[1]) != 0o444 {
		t.Errorf("ItemMode(items[1]) = %o, want the volume default 444", got.ItemMode(got.Items[1]))
	}
}

func TestParseNoSecretsUsesDefaults(t *testing.T) {
	t.Parallel()
	got, err := Parse(map[string]string{KubeletPodUID: "uid"})
	if err != nil {
		t.Fatalf("Parse() error = %v", err)
	}
	if len(got.Items) != 0 {
		t.Errorf("Items = %v, want none", got.Items)
	}
	if got.FileMode != DefaultFileMode {
		t.Errorf("FileMode = %o, want %o", got.FileMode, DefaultFileMode)
	}
}

func TestParseRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		attrs map[string]string
		want  []string // substrings of the message
	}{
		{"malformed yaml", map[string]string{AttrSecrets: "- path: [a"}, []string{`"secrets" is not a valid YAML list`}},
		{"not a list", map[string]string{AttrSecrets: "path: a/b"}, []string{`"secrets" is not a valid YAML list`}},
		{"empty", map[string]string{AttrSecrets: "  "}, []string{`"secrets" is empty`}},
		{"empty list", map[string]string{AttrSecrets: "[]"}, []string{"lists no items"}},
		{"unknown item key", map[string]string{AttrSecrets: "- path: a/b\n  fiel: x"}, []string{`unknown field "fiel"`}},
		{"missing path", map[string]string{AttrSecrets: "- field: x"}, []string{`secrets[0]`, `"path" is missing`}},
		{"absolute file", map[string]string{AttrSecrets: "- path: a/b\n  field: x\n  file: /etc/passwd"}, []string{`secrets[0] (path "a/b")`, `"/etc/passwd" is absolute`}},
		{"escaping file", map[string]string{AttrSecrets: "- path: a/b\n  field: x\n  file: ../x"}, []string{`contains ".."`}},
		{"reserved file", map[string]string{AttrSecrets: "- path: a/b\n  field: x\n  file: ..data"}, []string{`starting with ".."`}},
		{"unportable file", map[string]string{AttrSecrets: "- path: a/b\n  field: x\n  file: pass word"}, []string{"not portable"}},
		{"duplicate file", map[string]string{AttrSecrets: "- path: a/b\n  field: x\n  file: f\n- path: a/c\n  field: y\n  file: f"}, []string{`"f" is used twice`}},
		{"file and dir collide", map[string]string{AttrSecrets: "- path: a/b\n  field: x\n  file: db\n- path: a/c\n  field: y\n  file: db/pw"}, []string{`"db" is also the directory`}},
		{"bad type", map[string]string{AttrSecrets: "- path: a/b\n  type: static"}, []string{`"type" is "static"`}},
		{"data on kv", map[string]string{AttrSecrets: "- path: a/b\n  data: {x: 1}"}, []string{`"data" is only allowed for type "dynamic"`}},
		{"bad mode", map[string]string{AttrSecrets: "- path: a/b\n  mode: \"0999\""}, []string{`"0999" is not an octal file mode`}},
		{"exec mode", map[string]string{AttrSecrets: "- path: a/b\n  mode: \"0755\""}, []string{"execute bit"}},
		{"bad path", map[string]string{AttrSecrets: "- path: /a/b"}, []string{`must not start or end with '/'`}},
		{"dotdot path", map[string]string{AttrSecrets: "- path: a/../sys"}, []string{`contains ".."`}},
		{"file without field", map[string]string{AttrSecrets: "- path: a/b\n  file: x"}, []string{`"file" needs "field"`}},
		{"unknown attribute", map[string]string{"secret": "x"}, []string{`unknown volume attribute "secret"`}},
		{"bad role", map[string]string{AttrRole: "a/b"}, []string{`role "a/b" is not a valid`}},
		{"bad size", map[string]string{AttrSizeLimit: "-1"}, []string{`"-1" is not a positive whole number`}},
		{"huge size", map[string]string{AttrSizeLimit: "2Ti"}, []string{`"2Ti" is more than the maximum size of 1Ti`}},
		{"bad interval", map[string]string{AttrRefreshInterval: "1s"}, []string{"at least 10s"}},
		{"several problems", map[string]string{AttrRole: "a/b", AttrFileMode: "x"}, []string{`"fileMode"`, `role "a/b"`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse(tt.attrs)
			if err == nil {
				t.Fatal("Parse() error = nil, want an error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("errors.Is(err, ErrInvalid) = false for %v", err)
			}
			for _, want := range tt.want {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error %q spans several lines; kubelet events need one", err)
			}
		})
	}
}

func TestValidateFileName(t *testing.T) {
	t.Parallel()
	valid := []string{"password", "db/password", ".env", "a-b_c.d", strings.Repeat("a", 255)}
	for _, name := range valid {
		if err := ValidateFileName(name); err != nil {
			t.Errorf("ValidateFileName(%q) = %v, want nil", name, err)
		}
	}
	invalid := []string{"", "/x", "..", "a/..", "a/../b", "./a", "a//b", "a/", "..data", "x/..2026", "ü", "a b", strings.Repeat("a", 256)}
	for _, name := range invalid {
		if err := ValidateFileName(name); !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateFileName(%q) = %v, want ErrInvalid", name, err)
		}
	}
}

func TestCheckCollisions(t *testing.T) {
	t.Parallel()
	if err := CheckCollisions([]string{"a", "b/c", "b/d"}); err != nil {
		t.Errorf("CheckCollisions(distinct) = %v, want nil", err)
	}
	if err := CheckCollisions([]string{"a", "a"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("CheckCollisions(duplicate) = %v, want ErrInvalid", err)
	}
	if err := CheckCollisions([]string{"b/c/d", "b"}); !errors.Is(err, ErrInvalid) {
		t.Errorf("CheckCollisions(prefix) = %v, want ErrInvalid", err)
	}
}

func TestParseSize(t *testing.T) {
	t.Parallel()
	tests := map[string]int64{"1": 1, "4Mi": 4 << 20, "512Ki": 512 << 10, "1G": 1e9, "2k": 2000}
	for in, want := range tests {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-4Mi", "4MB", "Mi", "99999999Gi"} {
		if _, err := ParseSize(in); err == nil {
			t.Errorf("ParseSize(%q) error = nil, want an error", in)
		}
	}
}

func FuzzParseSecrets(f *testing.F) {
	f.Add("- path: a/b\n  field: x")
	f.Add("- path: database/creds/app\n  type: dynamic\n  data: {a: 1}")
	f.Add("[{path: x, file: ../y}]")
	f.Fuzz(func(t *testing.T, text string) {
		items, err := ParseSecrets(text)
		if err != nil {
			return
		}
		for _, item := range items {
			if item.File != "" {
				if err := ValidateFileName(item.File); err != nil {
					t.Fatalf("accepted item has invalid file %q: %v", item.File, err)
				}
			}
		}
	})
}
