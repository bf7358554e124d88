package main

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseFlagsOutageSettings(t *testing.T) {
	t.Parallel()
	base := []string{"--node-id", "n", "--openbao-addr", "https://openbao.example:8200"}
	getenv := func(string) string { return "" }

	cfg, err := parseFlags(base, getenv)
	if err != nil {
		t.Fatalf("parseFlags() = %v", err)
	}
	if cfg.gracePeriod != time.Hour || cfg.refreshInterval != 5*time.Minute || cfg.outageWait != 30*time.Second || cfg.keyName != defaultKeyName {
		t.Errorf("defaults = grace %v, refresh %v, wait %v, key %q", cfg.gracePeriod, cfg.refreshInterval, cfg.outageWait, cfg.keyName)
	}

	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--grace-period", "-1m"}, "--grace-period -1m0s is negative"},
		{[]string{"--refresh-interval", "1s"}, "--refresh-interval 1s is shorter than 10s"},
		{[]string{"--service-account-jwks-url", "ftp://x"}, `--service-account-jwks-url "ftp://x" is not an http(s) URL`},
	}
	for _, tt := range tests {
		_, err := parseFlags(append(append([]string{}, base...), tt.args...), getenv)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("parseFlags(%q) = %v, want an error containing %q", tt.args, err, tt.want)
		}
	}
}

func TestMemoryFilesystem(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a tmpfs")
	}
	disk := t.TempDir()
	if fsType, err := memoryFilesystem(disk); err == nil {
		// The test directory may itself be on a tmpfs.
		t.Logf("%s is on %s", disk, fsType)
	} else if !errors.Is(err, errNotMemory) {
		t.Errorf("memoryFilesystem(%s) = %v, want errNotMemory", disk, err)
	}

	dir := filepath.Join(t.TempDir(), "state")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("phantom-test", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(dir, 0) })
	if fsType, err := memoryFilesystem(dir); err != nil || fsType != "tmpfs" {
		t.Errorf("memoryFilesystem(tmpfs) = %q, %v; want tmpfs", fsType, err)
	}
}

func TestParseFlagsRejects(t *testing.T) {
	t.Parallel()
	base := []string{"--node-id", "n", "--openbao-addr", "https://openbao.example:8200"}
	getenv := func(string) string { return "" }

	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--metrics-addr", "nonsense"}, `--metrics-addr "nonsense" is not host:port`},
		{[]string{"--endpoint", "tcp://127.0.0.1:1"}, `scheme "tcp" is not supported`},
		{[]string{"--endpoint", "relative.sock"}, "names no absolute socket path"},
		{[]string{"--tmpfs-size-limit", "2Ti"}, "more than the maximum size of 1Ti"},
		{[]string{"--runtime-protection", "block"}, `--runtime-protection "block" is not off, audit or enforce`},
		{[]string{"--log-level", "loud"}, `--log-level "loud"`},
	}
	for _, tt := range tests {
		_, err := parseFlags(append(append([]string{}, base...), tt.args...), getenv)
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("parseFlags(%q) = %v, want an error containing %q", tt.args, err, tt.want)
		}
	}
}
