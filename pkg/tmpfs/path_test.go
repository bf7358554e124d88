package tmpfs

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestValidatePath(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		path    string
		wantErr string // substring of the error; empty means valid
	}{
		{name: "plain name", path: "password"},
		{name: "subdirectory", path: "tls/tls.crt"},
		{name: "dots dashes underscores", path: "a.b-c_d/e.f"},
		{name: "single leading dot", path: ".env"},
		{name: "segment of 255 bytes", path: strings.Repeat("a", 255)},
		{name: "path of 4096 bytes", path: strings.Repeat(strings.Repeat("a", 127)+"/", 32)[:4095] + "b"},
		{name: "empty", path: "", wantErr: "path is empty"},
		{name: "absolute", path: "/etc/passwd", wantErr: "path is absolute"},
		{name: "dot dot", path: "..", wantErr: `segment ".." is not allowed`},
		{name: "dot dot inside", path: "a/../b", wantErr: `segment ".." is not allowed`},
		{name: "dot dot at end", path: "a/..", wantErr: `segment ".." is not allowed`},
		{name: "reserved data link", path: "..data", wantErr: `starts with ".."`},
		{name: "reserved prefix in subdirectory", path: "a/..b", wantErr: `starts with ".."`},
		{name: "dot segment", path: "a/./b", wantErr: `segment "." is not allowed`},
		{name: "lone dot", path: ".", wantErr: `segment "." is not allowed`},
		{name: "double slash", path: "a//b", wantErr: "empty segment"},
		{name: "trailing slash", path: "a/", wantErr: "empty segment"},
		{name: "unicode", path: "pässword", wantErr: `character 'ä' is not allowed`},
		{name: "space", path: "my password", wantErr: `character ' ' is not allowed`},
		{name: "backslash", path: `a\b`, wantErr: `character '\\' is not allowed`},
		{name: "newline", path: "a\nb", wantErr: `character '\n' is not allowed`},
		{name: "segment of 256 bytes", path: strings.Repeat("a", 256), wantErr: "segment of 256 bytes"},
		{name: "path of 4097 bytes", path: strings.Repeat("a/", 2048) + "b", wantErr: "4097 bytes long"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			err := ValidatePath(tt.path)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("ValidatePath(%q) = %v, want nil", tt.path, err)
				}
				return
			}
			if !errors.Is(err, ErrInvalidPath) {
				t.Fatalf("ValidatePath(%q) = %v, want an error wrapping ErrInvalidPath", tt.path, err)
			}
			if !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ValidatePath(%q) = %q, want it to contain %q", tt.path, err, tt.wantErr)
			}
		})
	}
}

func TestPlanWriteRejects(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		files    []File
		maxBytes int64
		wantIs   error
		wantMsgs []string
	}{
		{
			name:     "duplicate path",
			files:    []File{{Path: "a"}, {Path: "a"}},
			maxBytes: 10,
			wantIs:   ErrInvalidPath,
			wantMsgs: []string{`"a": path is listed more than once`},
		},
		{
			name:     "file and directory",
			files:    []File{{Path: "a"}, {Path: "a/b/c"}},
			maxBytes: 10,
			wantIs:   ErrInvalidPath,
			wantMsgs: []string{`"a/b/c": path needs "a" as a directory`},
		},
		{
			name:     "every invalid path reported",
			files:    []File{{Path: "/x"}, {Path: "ok"}, {Path: "a b"}},
			maxBytes: 10,
			wantIs:   ErrInvalidPath,
			wantMsgs: []string{`"/x"`, `"a b"`},
		},
		{
			name:     "setuid bit",
			files:    []File{{Path: "a", Mode: 0o4755}},
			maxBytes: 10,
			wantIs:   ErrInvalidMode,
			wantMsgs: []string{`for "a"`},
		},
		{
			name:     "too large",
			files:    []File{{Path: "a", Data: make([]byte, 6)}, {Path: "b", Data: make([]byte, 5)}},
			maxBytes: 10,
			wantIs:   ErrTooLarge,
			wantMsgs: []string{"total 11 bytes", "limit of 10 bytes"},
		},
		{
			name:     "zero limit",
			files:    []File{{Path: "a"}},
			maxBytes: 0,
			wantIs:   ErrInvalidOptions,
			wantMsgs: []string{"MaxBytes 0 must be positive"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := planWrite(tt.files, tt.maxBytes)
			if !errors.Is(err, tt.wantIs) {
				t.Fatalf("planWrite() = %v, want an error wrapping %v", err, tt.wantIs)
			}
			for _, msg := range tt.wantMsgs {
				if !strings.Contains(err.Error(), msg) {
					t.Errorf("planWrite() error %q does not contain %q", err, msg)
				}
			}
		})
	}
}

func TestPlanWriteLayout(t *testing.T) {
	t.Parallel()
	files := []File{
		{Path: "z"},
		{Path: "tls/ca/root.pem", Mode: 0o400},
		{Path: "tls/tls.key"},
		{Path: "a/b"},
	}
	plan, err := planWrite(files, 1)
	if err != nil {
		t.Fatalf("planWrite() = %v", err)
	}

	if diff := cmp.Diff([]string{"a", "tls", "tls/ca"}, plan.dirs); diff != "" {
		t.Errorf("dirs mismatch (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"a", "tls", "z"}, plan.topNames); diff != "" {
		t.Errorf("topNames mismatch (-want +got):\n%s", diff)
	}
	gotModes := map[string]uint32{}
	for _, f := range plan.files {
		gotModes[f.path] = uint32(f.mode)
	}
	wantModes := map[string]uint32{"a/b": 0o440, "tls/ca/root.pem": 0o400, "tls/tls.key": 0o440, "z": 0o440}
	if diff := cmp.Diff(wantModes, gotModes); diff != "" {
		t.Errorf("modes mismatch (-want +got):\n%s", diff)
	}
}

func TestFileRedactsData(t *testing.T) {
	t.Parallel()
	const canary = "canary-4f1c9e0b-secret"
	f := File{Path: "db/password", Data: []byte(canary), Mode: 0o400}

	var logged strings.Builder
	slog.New(slog.NewJSONHandler(&logged, nil)).Info("file", "file", f, "files", []File{f})
	encoded, err := json.Marshal([]File{f})
	if err != nil {
		t.Fatalf("json.Marshal() = %v", err)
	}
	outputs := map[string]string{
		"%v":   fmt.Sprintf("%v", f),
		"%+v":  fmt.Sprintf("%+v", f),
		"%#v":  fmt.Sprintf("%#v", f),
		"%s":   fmt.Sprintf("%s", f),
		"%x":   fmt.Sprintf("%x", f),
		"%v[]": fmt.Sprintf("%v", []File{f}),
		"%v*":  fmt.Sprintf("%v", &f),
		"slog": logged.String(),
		"json": string(encoded),
	}
	for name, out := range outputs {
		if strings.Contains(out, canary) || strings.Contains(out, fmt.Sprintf("%x", canary)) {
			t.Errorf("%s output contains the file data: %s", name, out)
		}
		if !strings.Contains(out, "db/password") {
			t.Errorf("%s output lacks the path: %s", name, out)
		}
	}
}

func TestMinMountSize(t *testing.T) {
	t.Parallel()
	tests := []struct {
		maxBytes int64
		maxFiles int
		want     int64
	}{
		{maxBytes: 0, maxFiles: 0, want: 0},
		{maxBytes: 1, maxFiles: 1, want: 3 * (1 + 4096)},
		{maxBytes: 5 << 20, maxFiles: 10, want: 3 * (5<<20 + 10*4096)},
		{maxBytes: -1, maxFiles: -1, want: 0},
	}
	for _, tt := range tests {
		if got := MinMountSize(tt.maxBytes, tt.maxFiles); got != tt.want {
			t.Errorf("MinMountSize(%d, %d) = %d, want %d", tt.maxBytes, tt.maxFiles, got, tt.want)
		}
	}
}
