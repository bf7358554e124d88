package sovereignty

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func randomValue(t *testing.T) []byte {
	t.Helper()
	return []byte("canary-" + rand.Text())
}

func TestMatcherFindsEncodings(t *testing.T) {
	t.Parallel()
	value := randomValue(t)
	m, err := NewMatcher([]Value{{Label: "db password", Data: value}})
	if err != nil {
		t.Fatal(err)
	}

	embedded := func(prefix string, enc *base64.Encoding) []byte {
		return []byte("before " + enc.EncodeToString(append([]byte(prefix), append(value, " after"...)...)) + " end")
	}
	tests := []struct {
		name string
		data []byte
		want string
	}{
		{"raw", append(append([]byte("x=\""), value...), '"'), "raw"},
		{"hex", []byte("dump " + hex.EncodeToString(value) + "\n"), "hex"},
		{"base64 offset 0", embedded("", base64.StdEncoding), "base64+0"},
		{"base64 offset 1", embedded("a", base64.StdEncoding), "base64+1"},
		{"base64 offset 2", embedded("ab", base64.StdEncoding), "base64+2"},
		{"base64url offset 1", embedded("a", base64.URLEncoding), "base64url+1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var encodings []string
			for _, match := range m.Find(tt.data) {
				if match.Label != "db password" {
					t.Errorf("match label = %q, want %q", match.Label, "db password")
				}
				encodings = append(encodings, match.Encoding)
			}
			if !contains(encodings, tt.want) {
				t.Errorf("Find found encodings %v, want one of them to be %s", encodings, tt.want)
			}
		})
	}
}

func TestMatcherIgnoresOtherData(t *testing.T) {
	t.Parallel()
	value := randomValue(t)
	m, err := NewMatcher([]Value{{Label: "v", Data: value}})
	if err != nil {
		t.Fatal(err)
	}
	// Everything but the last byte of the value, in each encoding.
	partial := value[:len(value)-1]
	data := bytes.Join([][]byte{partial, []byte(hex.EncodeToString(partial[:8])), make([]byte, 4096)}, []byte(" "))
	if got := m.Find(data); len(got) != 0 {
		t.Errorf("Find on data without the value = %v, want no match", got)
	}
}

func TestNewMatcherRejectsBadValues(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		value Value
		want  string
	}{
		{"short", Value{Label: "short", Data: []byte("0123456789")}, "shorter than the minimum of 16"},
		{"no label", Value{Data: []byte("0123456789abcdefgh")}, "has no label"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := NewMatcher([]Value{tt.value})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewMatcher error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestScanStreamAcrossChunks(t *testing.T) {
	t.Parallel()
	value := randomValue(t)
	s, err := NewScanner([]Value{{Label: "split", Data: value}})
	if err != nil {
		t.Fatal(err)
	}
	// The value starts 5 bytes before the first chunk ends.
	data := append(bytes.Repeat([]byte("x"), chunkSize-5), value...)
	data = append(data, "\ntrailer\n"...)

	n, lines, err := s.ScanStream(SourceLog, "big.log", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(len(data)) || lines != 2 {
		t.Errorf("ScanStream read %d bytes and %d lines, want %d and 2", n, lines, len(data))
	}
	want := []Hit{{Match: Match{Label: "split", Encoding: "raw"}, Source: SourceLog, Where: "big.log"}}
	if diff := cmp.Diff(want, s.Report().Hits); diff != "" {
		t.Errorf("hits (-want +got):\n%s", diff)
	}
}

func TestScanTreeFindsFilesAndFollowsNoLinks(t *testing.T) {
	t.Parallel()
	secret, decoy := randomValue(t), randomValue(t)
	root := t.TempDir()
	mustWrite(t, filepath.Join(root, "a", "b", "leak.json"), append([]byte(`{"v":"`), append(secret, `"}`...)...))
	mustWrite(t, filepath.Join(root, "clean.txt"), []byte("nothing here\n"))
	mustWrite(t, filepath.Join(root, "decoy.bin"), []byte(base64.StdEncoding.EncodeToString(decoy)))
	outside := filepath.Join(t.TempDir(), "outside")
	mustWrite(t, outside, secret)
	if err := os.Symlink(outside, filepath.Join(root, "link")); err != nil {
		t.Fatal(err)
	}

	s, err := NewScanner([]Value{{Label: "secret", Data: secret}, {Label: "decoy", Data: decoy, Decoy: true}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ScanTree(root); err != nil {
		t.Fatal(err)
	}

	r := s.Report()
	if r.Files != 3 {
		t.Errorf("Files = %d, want 3 (the symbolic link is not followed)", r.Files)
	}
	var where []string
	for _, h := range r.SecretHits() {
		where = append(where, strings.TrimPrefix(h.Where, root))
	}
	if diff := cmp.Diff([]string{"/a/b/leak.json"}, where); diff != "" {
		t.Errorf("secret hits (-want +got):\n%s", diff)
	}
	if !r.DecoyFound("decoy", SourceFile) {
		t.Errorf("decoy in base64 not found; hits: %v", r.Hits)
	}
}

func TestScanEtcdParsesEtcdctlOutput(t *testing.T) {
	t.Parallel()
	secret, decoy := randomValue(t), randomValue(t)
	enc := base64.StdEncoding.EncodeToString
	output := `{"header":{"revision":9},"kvs":[` +
		`{"key":"` + enc([]byte("/registry/configmaps/e2e/decoy")) + `","value":"` + enc(append([]byte("k8s\x00"), decoy...)) + `"},` +
		`{"key":"` + enc([]byte("/registry/secrets/e2e/plain")) + `","value":"` + enc([]byte("k8s\x00nothing")) + `"}` +
		`],"count":2}`

	kvs, err := ParseEtcdctlJSON([]byte(output))
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewScanner([]Value{{Label: "secret", Data: secret}, {Label: "decoy", Data: decoy, Decoy: true}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ScanEtcd(kvs); err != nil {
		t.Fatal(err)
	}

	r := s.Report()
	if r.EtcdKeys != 2 {
		t.Errorf("EtcdKeys = %d, want 2", r.EtcdKeys)
	}
	want := []Hit{{Match: Match{Label: "decoy", Encoding: "raw", Decoy: true}, Source: SourceEtcd, Where: "/registry/configmaps/e2e/decoy"}}
	if diff := cmp.Diff(want, r.Hits); diff != "" {
		t.Errorf("hits (-want +got):\n%s", diff)
	}
}

func TestParseEtcdctlJSONRejectsBadBase64(t *testing.T) {
	t.Parallel()
	_, err := ParseEtcdctlJSON([]byte(`{"kvs":[{"key":"L3g=","value":"not base64!"}]}`))
	if err == nil || !strings.Contains(err.Error(), `decode value of etcd key "/x"`) {
		t.Errorf("error = %v, want one naming the key", err)
	}
}

func TestReportSummary(t *testing.T) {
	t.Parallel()
	value := randomValue(t)
	s, err := NewScanner([]Value{{Label: "a", Data: value}, {Label: "b", Data: randomValue(t)}, {Label: "d", Data: randomValue(t), Decoy: true}})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ScanLog("pod.log", bytes.NewReader(append([]byte("one\ntwo "), append(value, '\n')...))); err != nil {
		t.Fatal(err)
	}

	got := s.Report().Summary()
	want := "scanned 0 etcd keys, 0 files (0.0 MiB), 2 log lines for 2 secret values: 1 hits"
	if got != want {
		t.Errorf("Summary() = %q, want %q", got, want)
	}
	if strings.Contains(got, string(value)) || strings.Contains(s.Report().Hits[0].String(), string(value)) {
		t.Error("report text contains the secret value")
	}
}

func mustWrite(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
