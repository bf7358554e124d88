package jwks

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// In-cluster paths, as Kubernetes mounts them into every pod.
const (
	inClusterTokenFile = "/var/run/secrets/kubernetes.io/serviceaccount/token"
	inClusterCAFile    = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt"
	jwksPath           = "/openid/v1/jwks"
	maxKeySetBytes     = 1 << 20
)

// FileSource reads the key set from a file, such as one mounted from a
// ConfigMap.
type FileSource struct {
	Path string
}

// Fetch reads the file.
func (s FileSource) Fetch(context.Context) ([]byte, error) {
	raw, err := os.ReadFile(s.Path)
	if err != nil {
		return nil, fmt.Errorf("read service-account keys: %w", err)
	}
	return raw, nil
}

// StaticSource returns a fixed key set, for tests.
type StaticSource []byte

// Fetch returns the key set.
func (s StaticSource) Fetch(context.Context) ([]byte, error) { return s, nil }

// URLSource fetches the key set over HTTPS, such as from the API server's
// /openid/v1/jwks.
type URLSource struct {
	URL    string
	Client *http.Client
	// TokenFile holds a bearer token, read again for every fetch because
	// projected tokens rotate; empty sends none.
	TokenFile string
}

// InClusterSource returns a source for the API server of the cluster the
// process runs in, authenticated with the pod's own service-account token
// (the default ClusterRole system:service-account-issuer-discovery grants
// every service account this read).
func InClusterSource() (*URLSource, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, fmt.Errorf("not running in a Kubernetes pod: KUBERNETES_SERVICE_HOST or KUBERNETES_SERVICE_PORT is empty")
	}
	client, err := NewHTTPClient(inClusterCAFile)
	if err != nil {
		return nil, err
	}
	return &URLSource{URL: "https://" + net.JoinHostPort(host, port) + jwksPath, Client: client, TokenFile: inClusterTokenFile}, nil
}

// NewHTTPClient returns a client that trusts the PEM CAs in caFile, or the
// system roots when caFile is empty.
func NewHTTPClient(caFile string) (*http.Client, error) {
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, fmt.Errorf("read CA file for the service-account keys: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s contains no PEM certificate", caFile)
		}
		tlsConfig.RootCAs = pool
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = tlsConfig
	return &http.Client{Transport: transport, Timeout: 10 * time.Second}, nil
}

// Fetch gets the key set.
func (s *URLSource) Fetch(ctx context.Context) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.URL, nil)
	if err != nil {
		return nil, fmt.Errorf("fetch service-account keys from %s: %w", s.URL, err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	if s.TokenFile != "" {
		token, err := os.ReadFile(s.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("read token for fetching service-account keys: %w", err)
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
	}

	client := s.Client
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("fetch service-account keys: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("fetch service-account keys from %s: HTTP %d", s.URL, resp.StatusCode)
	}
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxKeySetBytes))
	if err != nil {
		return nil, fmt.Errorf("read service-account keys from %s: %w", s.URL, err)
	}
	return raw, nil
}
