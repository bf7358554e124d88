package cluster

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/phantom-sec/phantom/tests/e2e/cluster/ociarchive"
)

const sampleEnv = `# Source this file to use the end-to-end cluster from a shell or a test.
export PHANTOM_E2E_STATE=/tmp/e2e
export KUBECONFIG=/tmp/e2e/kubeconfig
export PATH=/cache/bin:${PATH}
export PHANTOM_E2E_BIN=/cache/bin
export PHANTOM_E2E_CACHE=/cache
export PHANTOM_E2E_APISERVER=https://127.0.0.1:16443
export PHANTOM_E2E_APISERVER_PORT=16443
export PHANTOM_E2E_SERVICE_ACCOUNT_ISSUER=https://127.0.0.1:16443
export PHANTOM_E2E_CA=/tmp/e2e/pki/ca.crt
export PHANTOM_E2E_ADMIN_CERT=/tmp/e2e/pki/admin.crt
export PHANTOM_E2E_ADMIN_KEY=/tmp/e2e/pki/admin.key
export PHANTOM_E2E_NODE=phantom-e2e
export PHANTOM_E2E_KUBELET_ROOT=/tmp/e2e/kubelet
export PHANTOM_E2E_CONTAINERD_ADDRESS=/tmp/e2e/containerd/containerd.sock
export PHANTOM_E2E_ETCD_DATA=/tmp/e2e/etcd
export ETCDCTL_API=3
export ETCDCTL_ENDPOINTS=https://127.0.0.1:23790
`

func TestLoadReadsEnvFile(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "env"), []byte(sampleEnv), 0o600); err != nil {
		t.Fatal(err)
	}

	got, err := Load(dir)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	want := &Cluster{
		StateDir:             "/tmp/e2e",
		BinDir:               "/cache/bin",
		Kubeconfig:           "/tmp/e2e/kubeconfig",
		APIServer:            "https://127.0.0.1:16443",
		ServiceAccountIssuer: "https://127.0.0.1:16443",
		CAFile:               "/tmp/e2e/pki/ca.crt",
		AdminCertFile:        "/tmp/e2e/pki/admin.crt",
		AdminKeyFile:         "/tmp/e2e/pki/admin.key",
		NodeName:             "phantom-e2e",
		KubeletRootDir:       "/tmp/e2e/kubelet",
		ContainerdAddress:    "/tmp/e2e/containerd/containerd.sock",
		EtcdDataDir:          "/tmp/e2e/etcd",
		Etcd:                 []string{"ETCDCTL_API=3", "ETCDCTL_ENDPOINTS=https://127.0.0.1:23790"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Load (-want +got):\n%s", diff)
	}
}

func TestLoadMissingEnvFile(t *testing.T) {
	t.Parallel()

	_, err := Load(t.TempDir())
	if !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Load error = %v, want ErrNotRunning", err)
	}
	if !strings.Contains(err.Error(), "up.sh") {
		t.Errorf("Load error = %q, want it to name up.sh", err)
	}
}

func TestLoadMissingVariable(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()
	env := strings.ReplaceAll(sampleEnv, "export PHANTOM_E2E_KUBELET_ROOT=/tmp/e2e/kubelet\n", "")
	if err := os.WriteFile(filepath.Join(dir, "env"), []byte(env), 0o600); err != nil {
		t.Fatal(err)
	}

	_, err := Load(dir)
	if err == nil {
		t.Fatal("Load succeeded on an env file without PHANTOM_E2E_KUBELET_ROOT")
	}
	if !strings.Contains(err.Error(), "lacks PHANTOM_E2E_KUBELET_ROOT") {
		t.Errorf("Load error = %q, want it to name PHANTOM_E2E_KUBELET_ROOT", err)
	}
}

// writeClientCert writes a self-signed client certificate and its key to dir
// and returns their paths and the parsed certificate.
func writeClientCert(t *testing.T, dir string) (certFile, keyFile string, cert *x509.Certificate) {
	t.Helper()

	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	template := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "admin", Organization: []string{"system:masters"}},
		NotBefore:             time.Now().Add(-time.Minute),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err = x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}

	certFile = filepath.Join(dir, "admin.crt")
	keyFile = filepath.Join(dir, "admin.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile, cert
}

// startAPIServer starts a TLS server that requires the client certificate
// and returns status for /readyz, and returns a Cluster pointing at it.
func startAPIServer(t *testing.T, status int) (*Cluster, *httptest.Server) {
	t.Helper()

	dir := t.TempDir()
	certFile, keyFile, clientCert := writeClientCert(t, dir)

	server := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(status)
		fmt.Fprint(w, http.StatusText(status))
	}))
	clientCAs := x509.NewCertPool()
	clientCAs.AddCert(clientCert)
	server.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: clientCAs}
	server.StartTLS()
	t.Cleanup(server.Close)

	caFile := filepath.Join(dir, "ca.crt")
	caPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: server.Certificate().Raw})
	if err := os.WriteFile(caFile, caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	c := &Cluster{APIServer: server.URL, CAFile: caFile, AdminCertFile: certFile, AdminKeyFile: keyFile}
	return c, server
}

func TestReadyStatus(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name    string
		status  int
		wantErr string
	}{
		{name: "ready", status: http.StatusOK},
		{name: "not ready", status: http.StatusInternalServerError, wantErr: "not ready: status 500"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			c, _ := startAPIServer(t, tt.status)
			err := c.Ready(context.Background())
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("Ready: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("Ready error = %v, want it to contain %q", err, tt.wantErr)
			}
		})
	}
}

func TestReadyServerGone(t *testing.T) {
	t.Parallel()

	c, server := startAPIServer(t, http.StatusOK)
	server.Close()

	err := c.Ready(context.Background())
	if !errors.Is(err, ErrNotRunning) {
		t.Fatalf("Ready error = %v, want ErrNotRunning", err)
	}
}

// TestClusterRunsLoadedImage runs against the cluster of up.sh: it loads a
// new image from the host's static busybox and runs a host-network pod from
// it to completion.
func TestClusterRunsLoadedImage(t *testing.T) {
	c := Require(t)
	const busybox = "/bin/busybox"
	if _, err := os.Stat(busybox); err != nil {
		t.Skipf("skipping: %s (Debian's busybox-static) not found: %v", busybox, err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	tag := fmt.Sprintf("t%d", time.Now().UnixNano())
	img := ociarchive.Image{
		Name:       "phantom/cluster-test:" + tag,
		Entries:    []ociarchive.Entry{{Path: "/bin/busybox", Source: busybox}},
		Entrypoint: []string{"/bin/busybox"},
	}
	if err := c.LoadImage(ctx, img); err != nil {
		t.Fatalf("LoadImage: %v", err)
	}

	pod := "cluster-test-" + tag
	manifest := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata:
  name: %s
  namespace: default
spec:
  hostNetwork: true
  restartPolicy: Never
  containers:
  - name: hello
    image: phantom/cluster-test:%s
    imagePullPolicy: Never
    args: ["echo", "hello"]
`, pod, tag)
	if _, err := c.Kubectl(ctx, strings.NewReader(manifest), "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if _, err := c.Kubectl(context.Background(), nil, "delete", "pod", pod, "--wait=false"); err != nil {
			t.Logf("delete pod %s: %v", pod, err)
		}
	})

	if _, err := c.Kubectl(ctx, nil, "wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/"+pod, "--timeout=90s"); err != nil {
		describe, _ := c.Kubectl(context.Background(), nil, "describe", "pod", pod)
		t.Fatalf("pod %s did not succeed: %v\n%s", pod, err, describe)
	}
	logs, err := c.Kubectl(ctx, nil, "logs", pod)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(logs)); got != "hello" {
		t.Errorf("pod logs = %q, want %q", got, "hello")
	}
}
