package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/phantom-sec/phantom/tests/e2e/setup"
)

func TestServeWritesFilesAndServesAPI(t *testing.T) {
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- serve(ctx, slog.New(slog.DiscardHandler), "127.0.0.1:0", dir) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve returned %v after cancel, want nil", err)
		}
	})

	token := waitForFile(t, filepath.Join(dir, FileRootToken))
	address := strings.TrimSpace(readFile(t, filepath.Join(dir, FileAddress)))
	if !strings.HasPrefix(address, "https://127.0.0.1:") {
		t.Fatalf("address file = %q, want https://127.0.0.1:PORT", address)
	}
	info, err := os.Stat(filepath.Join(dir, FileRootToken))
	if err != nil {
		t.Fatal(err)
	}
	if info.Mode().Perm() != 0o600 {
		t.Errorf("root-token mode = %o, want 600", info.Mode().Perm())
	}

	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM([]byte(readFile(t, filepath.Join(dir, FileCA)))) {
		t.Fatal("ca.crt contains no certificate")
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}

	tests := []struct {
		name       string
		path       string
		token      string
		wantStatus int
		wantBody   string
	}{
		{"health through the CA", "/v1/sys/health", "", http.StatusOK, `"sealed":false`},
		{"status without token", "/e2e/status", "", http.StatusForbidden, "requires the root token"},
		{"status with root token", "/e2e/status?database_mount=database", token, http.StatusOK, `"activeLeases":0`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(http.MethodGet, address+tt.path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.token != "" {
				req.Header.Set("X-Vault-Token", tt.token)
			}
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantStatus || !strings.Contains(string(body), tt.wantBody) {
				t.Errorf("GET %s = %d %q, want %d with %q", tt.path, resp.StatusCode, body, tt.wantStatus, tt.wantBody)
			}
		})
	}
}

func TestStatusMatchesSetupClient(t *testing.T) {
	data, err := json.Marshal(Status{ActiveLeases: 2, DatabaseUsers: 1, Tokens: 3})
	if err != nil {
		t.Fatal(err)
	}
	var got setup.Status
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(setup.Status{ActiveLeases: 2, DatabaseUsers: 1, Tokens: 3}, got); diff != "" {
		t.Errorf("setup.Status decoded from the server's JSON (-want +got):\n%s", diff)
	}
}

func TestRunRejectsBadFlags(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"-addr", "127.0.0.1:1"}, "-dir is required"},
		{[]string{"-dir", t.TempDir(), "-addr", "0.0.0.0:18200"}, "is not a loopback host:port"},
		{[]string{"-dir", t.TempDir(), "extra"}, "unexpected arguments"},
	}
	for _, tt := range tests {
		err := run(tt.args)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("run(%q) = %v, want an error containing %q", tt.args, err, tt.want)
		}
	}
}

func waitForFile(t *testing.T, path string) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if data, err := os.ReadFile(path); err == nil && len(data) > 0 {
			return strings.TrimSpace(string(data))
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s not written within 10s", path)
	return ""
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
