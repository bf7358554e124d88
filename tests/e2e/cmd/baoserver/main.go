// Command baoserver runs the OpenBao API test server of pkg/baotest as a
// process, so that the end-to-end cluster's phantom-node pods can reach it
// over the network like a real OpenBao:
//
//	baoserver -addr 127.0.0.1:18200 -dir /tmp/phantom-e2e/openbao
//
// It serves HTTPS on a fixed loopback address with a certificate for
// 127.0.0.1 and writes three files into -dir: `address` (the URL), `ca.crt`
// (the CA that signed the serving certificate) and `root-token` (mode
// 0600). It runs until SIGTERM or SIGINT.
//
// Besides OpenBao's API under /v1/, it serves GET /e2e/status, which
// returns the counts that tests cannot read through OpenBao's API: active
// leases, valid tokens and database users of one mount. It requires the
// root token in X-Vault-Token and returns no secret.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/phantom-sec/phantom/pkg/baotest"
)

// certValidity covers the longest life of an end-to-end cluster, whose
// own certificates last 30 days.
const certValidity = 30 * 24 * time.Hour

// Files written to the -dir directory.
const (
	FileAddress   = "address"
	FileCA        = "ca.crt"
	FileRootToken = "root-token"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "baoserver:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("baoserver", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:18200", "loopback address to serve HTTPS on")
	dir := fs.String("dir", "", "directory for the address, ca.crt and root-token files (required)")
	debug := fs.Bool("debug", false, "log one line per request (method, path, operation, status; never tokens or bodies)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	switch {
	case fs.NArg() > 0:
		return fmt.Errorf("unexpected arguments %q: baoserver takes flags only", fs.Args())
	case *dir == "":
		return errors.New("-dir is required: set it to the directory that receives address, ca.crt and root-token")
	}
	host, _, err := net.SplitHostPort(*addr)
	if err != nil || !net.ParseIP(host).IsLoopback() {
		return fmt.Errorf("-addr %q is not a loopback host:port such as 127.0.0.1:18200", *addr)
	}

	level := slog.LevelInfo
	if *debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	return serve(ctx, log, *addr, *dir)
}

// serve starts the test server, publishes its files and serves until ctx
// ends.
func serve(ctx context.Context, log *slog.Logger, addr, dir string) error {
	// Start listens on a random port of its own. Take that listener down and
	// serve the same handler on the fixed address instead, so that the
	// chart's openbao.address is known before the server starts.
	bao, err := baotest.Start(baotest.Options{Logger: log})
	if err != nil {
		return err
	}
	defer bao.Close()
	bao.SetDown(true)

	tlsConfig, caPEM, err := newTLS(net.ParseIP(strings.Split(addr, ":")[0]))
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}

	mux := http.NewServeMux()
	mux.Handle("/v1/", bao)
	mux.Handle("GET /e2e/status", statusHandler{bao: bao})
	server := &http.Server{
		Handler:           mux,
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}

	url := "https://" + ln.Addr().String()
	if err := writeFiles(dir, url, caPEM, bao.RootToken()); err != nil {
		ln.Close()
		return err
	}
	log.Info("baoserver listening", "address", url, "dir", dir, "version", baotest.Version)

	errCh := make(chan error, 1)
	go func() { errCh <- server.ServeTLS(ln, "", "") }()
	select {
	case err := <-errCh:
		return fmt.Errorf("serve %s: %w", url, err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := server.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	log.Info("baoserver stopped")
	return nil
}

// writeFiles writes the address, CA and root token files. The token file
// is written last, so a reader that waits for it finds the others.
func writeFiles(dir, url string, caPEM []byte, rootToken string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{FileAddress, []byte(url + "\n"), 0o644},
		{FileCA, caPEM, 0o644},
		{FileRootToken, []byte(rootToken + "\n"), 0o600},
	}
	for _, f := range files {
		path := filepath.Join(dir, f.name)
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, f.data, f.mode); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
		if err := os.Rename(tmp, path); err != nil {
			return fmt.Errorf("write %s: %w", path, err)
		}
	}
	return nil
}

// statusHandler serves the counts that OpenBao's API does not list.
type statusHandler struct {
	bao *baotest.Server
}

// Status is the body of GET /e2e/status.
type Status struct {
	// ActiveLeases is the number of active leases on every mount.
	ActiveLeases int `json:"activeLeases"`
	// DatabaseUsers is the number of database users with an active lease
	// on the mount named by the query parameter database_mount.
	DatabaseUsers int `json:"databaseUsers"`
	// Tokens is the number of valid tokens other than the root token.
	Tokens int `json:"tokens"`
}

func (h statusHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("X-Vault-Token") != h.bao.RootToken() {
		http.Error(w, "GET /e2e/status requires the root token in X-Vault-Token", http.StatusForbidden)
		return
	}
	status := Status{
		ActiveLeases: h.bao.LeaseCount(),
		Tokens:       h.bao.TokenCount(),
	}
	if mount := r.URL.Query().Get("database_mount"); mount != "" {
		status.DatabaseUsers = len(h.bao.DatabaseUsers(mount))
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(status)
}

// newTLS returns a server TLS configuration with a certificate for ip,
// signed by a CA made here, and the CA certificate in PEM form. The CA key
// is dropped after signing.
func newTLS(ip net.IP) (*tls.Config, []byte, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate CA key: %w", err)
	}
	now := time.Now()
	caTemplate := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "phantom-e2e baoserver CA"},
		NotBefore:             now.Add(-time.Minute),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTemplate, caTemplate, caKey.Public(), caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("create CA certificate: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, nil, fmt.Errorf("parse CA certificate: %w", err)
	}

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("generate server key: %w", err)
	}
	template := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: ip.String()},
		NotBefore:    now.Add(-time.Minute),
		NotAfter:     now.Add(certValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{ip},
		DNSNames:     []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, template, caCert, key.Public(), caKey)
	if err != nil {
		return nil, nil, fmt.Errorf("create server certificate: %w", err)
	}

	config := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
	}
	return config, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), nil
}

func randomSerial() *big.Int {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(fmt.Sprintf("read random serial: %v", err))
	}
	return serial
}
