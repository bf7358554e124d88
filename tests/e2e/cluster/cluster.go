// Package cluster gives Go end-to-end tests the single-node Kubernetes
// cluster that up.sh in this directory starts. It reads the variables that
// up.sh writes to the state directory's env file, checks that the API server
// responds, runs kubectl against the cluster and loads images into the
// cluster's containerd.
//
// The package starts and stops nothing: the cluster is a set of host
// processes that outlive a test binary, started by up.sh and stopped by
// down.sh (see ../README.md).
package cluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/phantom-sec/phantom/tests/e2e/cluster/ociarchive"
)

// Environment variables read by this package.
const (
	// EnvStateDir names the state directory of the cluster, as for up.sh.
	EnvStateDir = "PHANTOM_E2E_STATE"
	// EnvRequired, set to 1, makes Require fail instead of skip when no
	// cluster runs, so a CI job that started one cannot pass by skipping.
	EnvRequired = "PHANTOM_E2E_REQUIRED"

	// DefaultStateDir is the state directory when EnvStateDir is unset.
	DefaultStateDir = "/tmp/phantom-e2e"

	// ContainerdNamespace is the containerd namespace of kubelet's images.
	ContainerdNamespace = "k8s.io"
)

// ErrNotRunning is returned when the state directory contains no started
// cluster or its API server does not respond.
var ErrNotRunning = errors.New("end-to-end cluster not running")

// Cluster describes a cluster started by up.sh. Every path is on the host.
type Cluster struct {
	StateDir string
	// BinDir contains kubectl, etcdctl and the other binaries of build.sh.
	BinDir string
	// Kubeconfig is a cluster-admin kubeconfig with embedded credentials.
	Kubeconfig string
	// APIServer is the API server's URL, https://127.0.0.1:PORT. Pods reach
	// it there too, because the cluster has no Service proxy.
	APIServer string
	// ServiceAccountIssuer is the iss claim of service-account tokens, and
	// the base URL of the issuer's discovery document and keys.
	ServiceAccountIssuer string
	// CAFile is the cluster CA certificate, which signed every serving and
	// client certificate of the cluster.
	CAFile string
	// AdminCertFile and AdminKeyFile are a client certificate in the
	// system:masters group.
	AdminCertFile string
	AdminKeyFile  string
	// NodeName is the name of the only node.
	NodeName string
	// KubeletRootDir is kubelet's --root-dir, the value for a chart's
	// kubelet directory setting.
	KubeletRootDir string
	// ContainerdAddress is the containerd socket kubelet uses.
	ContainerdAddress string
	// EtcdDataDir is etcd's data directory.
	EtcdDataDir string
	// Etcd contains ETCDCTL_ENDPOINTS, ETCDCTL_CACERT, ETCDCTL_CERT,
	// ETCDCTL_KEY and ETCDCTL_API, the environment under which etcdctl
	// reaches the cluster's etcd.
	Etcd []string
}

// envKeys maps each variable of the env file to the field it sets.
func (c *Cluster) envKeys() map[string]*string {
	return map[string]*string{
		"PHANTOM_E2E_STATE":                  &c.StateDir,
		"PHANTOM_E2E_BIN":                    &c.BinDir,
		"KUBECONFIG":                         &c.Kubeconfig,
		"PHANTOM_E2E_APISERVER":              &c.APIServer,
		"PHANTOM_E2E_SERVICE_ACCOUNT_ISSUER": &c.ServiceAccountIssuer,
		"PHANTOM_E2E_CA":                     &c.CAFile,
		"PHANTOM_E2E_ADMIN_CERT":             &c.AdminCertFile,
		"PHANTOM_E2E_ADMIN_KEY":              &c.AdminKeyFile,
		"PHANTOM_E2E_NODE":                   &c.NodeName,
		"PHANTOM_E2E_KUBELET_ROOT":           &c.KubeletRootDir,
		"PHANTOM_E2E_CONTAINERD_ADDRESS":     &c.ContainerdAddress,
		"PHANTOM_E2E_ETCD_DATA":              &c.EtcdDataDir,
	}
}

// Load reads the env file that up.sh wrote to stateDir (DefaultStateDir when
// empty). It returns an error wrapping ErrNotRunning when the file does not
// exist, and one naming the variable when the file lacks one.
func Load(stateDir string) (*Cluster, error) {
	if stateDir == "" {
		stateDir = DefaultStateDir
	}
	path := filepath.Join(stateDir, "env")
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s not found; start it with tests/e2e/cluster/up.sh", ErrNotRunning, path)
	}
	if err != nil {
		return nil, fmt.Errorf("read cluster env file: %w", err)
	}

	c := &Cluster{}
	fields := c.envKeys()
	seen := map[string]bool{}
	scanner := bufio.NewScanner(bytes.NewReader(data))
	for scanner.Scan() {
		key, value, ok := parseExport(scanner.Text())
		if !ok {
			continue
		}
		if strings.HasPrefix(key, "ETCDCTL_") {
			c.Etcd = append(c.Etcd, key+"="+value)
			continue
		}
		if field, known := fields[key]; known {
			*field = value
			seen[key] = true
		}
	}

	var missing []string
	for key := range fields {
		if !seen[key] {
			missing = append(missing, key)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("cluster env file %s lacks %s; restart the cluster with up.sh", path, strings.Join(missing, ", "))
	}
	return c, nil
}

// parseExport splits a line of the form `export KEY=VALUE`.
func parseExport(line string) (key, value string, ok bool) {
	rest, found := strings.CutPrefix(strings.TrimSpace(line), "export ")
	if !found {
		return "", "", false
	}
	return strings.Cut(rest, "=")
}

// Require returns the cluster of EnvStateDir once its API server reports
// ready. Without a running cluster it skips the test, or fails it when
// EnvRequired is 1.
func Require(t testing.TB) *Cluster {
	t.Helper()

	c, err := Load(os.Getenv(EnvStateDir))
	if err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		err = c.Ready(ctx)
	}
	if err == nil {
		return c
	}
	if os.Getenv(EnvRequired) == "1" {
		t.Fatalf("%s=1 but: %v", EnvRequired, err)
	}
	t.Skipf("skipping end-to-end test: %v", err)
	return nil
}

// Ready returns nil when the API server's /readyz endpoint returns 200 to
// the admin client certificate, and an error wrapping ErrNotRunning when
// the server cannot be reached.
func (c *Cluster) Ready(ctx context.Context) error {
	client, err := c.adminHTTPClient()
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.APIServer+"/readyz", nil)
	if err != nil {
		return fmt.Errorf("build readiness request: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return fmt.Errorf("%w: GET %s/readyz: %w", ErrNotRunning, c.APIServer, err)
	}
	defer resp.Body.Close()

	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("API server %s not ready: status %d: %s", c.APIServer, resp.StatusCode, bytes.TrimSpace(body))
	}
	return nil
}

func (c *Cluster) adminHTTPClient() (*http.Client, error) {
	caPEM, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, fmt.Errorf("read cluster CA: %w", err)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(caPEM) {
		return nil, fmt.Errorf("cluster CA file %s contains no PEM certificate", c.CAFile)
	}
	cert, err := tls.LoadX509KeyPair(c.AdminCertFile, c.AdminKeyFile)
	if err != nil {
		return nil, fmt.Errorf("load admin client certificate: %w", err)
	}
	transport := &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12},
	}
	return &http.Client{Transport: transport}, nil
}

// Kubectl runs kubectl with the admin kubeconfig and returns its standard
// output. stdin, when not nil, is the command's standard input (for
// `apply -f -`). The error carries kubectl's standard error.
func (c *Cluster) Kubectl(ctx context.Context, stdin io.Reader, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, filepath.Join(c.BinDir, "kubectl"), append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	cmd.Stdin = stdin
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("kubectl %s: %w: %s", strings.Join(args, " "), err, bytes.TrimSpace(stderr.Bytes()))
	}
	return out, nil
}

// LoadImage writes img as an OCI archive and imports it into the cluster's
// containerd, where pods with imagePullPolicy Never find it under
// ociarchive.NormalizeName(img.Name). Importing an unchanged image again is
// harmless.
func (c *Cluster) LoadImage(ctx context.Context, img ociarchive.Image) error {
	f, err := os.CreateTemp(c.StateDir, "image-*.tar")
	if err != nil {
		return fmt.Errorf("create image archive: %w", err)
	}
	defer os.Remove(f.Name())

	if _, err := ociarchive.Write(f, img); err != nil {
		f.Close()
		return fmt.Errorf("write image %s: %w", img.Name, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("write image %s: %w", img.Name, err)
	}
	return c.ImportArchive(ctx, f.Name())
}

// ImportArchive imports an OCI or Docker image archive into the cluster's
// containerd with `ctr images import`.
func (c *Cluster) ImportArchive(ctx context.Context, path string) error {
	cmd := exec.CommandContext(ctx, "ctr", "--address", c.ContainerdAddress, "-n", ContainerdNamespace, "images", "import", path)
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("import image archive %s: %w: %s", path, err, bytes.TrimSpace(out))
	}
	return nil
}
