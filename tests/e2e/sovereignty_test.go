package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/phantom-sec/phantom/tests/e2e/setup"
	"github.com/phantom-sec/phantom/tests/e2e/sovereignty"
)

// Labels of the decoys, values planted where the scan must find them.
const (
	decoyConfigMap = "decoy in a ConfigMap"
	decoyBase64    = "decoy base64-encoded in a ConfigMap"
	decoyPodOutput = "decoy printed by a pod"
)

// hostPathsOutsideState are directories that the cluster's programs create
// at fixed places outside the state directory (see cluster/lib.sh).
var hostPathsOutsideState = []string{"/var/lib/kubelet", "/run/containerd"}

// testSovereignty scans etcd, the node's disk-backed directories that the
// run wrote to, and every log and metrics page it can capture, for every
// secret value of the run. It first plants decoys in each kind of source
// and fails unless the scan finds them, so the check can fail.
func (s *suite) testSovereignty(t *testing.T, beta *tenant) {
	started := time.Now()
	decoys := s.plantDecoys(t, beta)
	s.mu.Lock()
	values := append(append([]sovereignty.Value(nil), s.secrets...), decoys...)
	s.mu.Unlock()
	scanner, err := sovereignty.NewScanner(values)
	if err != nil {
		t.Fatal(err)
	}

	s.scanEtcd(t, scanner)
	s.scanDisks(t, scanner)
	s.scanLogs(t, scanner)
	s.scanMetrics(t, scanner)

	report := scanner.Report()
	checks := []struct{ label, source string }{
		{decoyConfigMap, sovereignty.SourceEtcd},
		{decoyConfigMap, sovereignty.SourceFile},
		{decoyBase64, sovereignty.SourceEtcd},
		{decoyPodOutput, sovereignty.SourceFile},
		{decoyPodOutput, sovereignty.SourceLog},
	}
	for _, c := range checks {
		if !report.DecoyFound(c.label, c.source) {
			t.Errorf("self-check failed: the scan did not find the %s in %s, so it cannot be trusted to find a secret there", c.label, c.source)
		}
	}
	for _, hit := range report.SecretHits() {
		t.Errorf("secret leaked: %s", hit)
	}
	t.Logf("skipped mounts (not on disk): %s", report.SkippedByType())
	t.Logf("scan took %s", time.Since(started).Round(100*time.Millisecond))
	t.Logf("sovereignty: %s", report.Summary())
}

// plantDecoys stores decoy values in etcd through a ConfigMap, raw and
// base64-encoded, and in a pod's log, then waits until the log has it.
func (s *suite) plantDecoys(t *testing.T, tn *tenant) []sovereignty.Value {
	t.Helper()
	ctx := context.Background()
	decoy := func(label string) sovereignty.Value {
		return sovereignty.Value{Label: label, Data: []byte("decoy-" + rand.Text()), Decoy: true}
	}
	values := []sovereignty.Value{decoy(decoyConfigMap), decoy(decoyBase64), decoy(decoyPodOutput)}

	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: "sovereignty-decoy", Namespace: tn.namespace},
		Data: map[string]string{
			"plain":   string(values[0].Data),
			"encoded": base64.StdEncoding.EncodeToString(values[1].Data),
		},
	}
	if _, err := s.kube.CoreV1().ConfigMaps(tn.namespace).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create decoy ConfigMap: %v", err)
	}

	pod := basePod(tn, "decoy-printer")
	pod.Spec.Containers[0].Command = []string{"/bin/sh", "-c", "echo \"$DECOY\"; " + sleeper}
	pod.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "DECOY", Value: string(values[2].Data)}}
	running := s.waitRunning(t, s.createPod(t, pod))
	err := poll(ctx, 30*time.Second, func() (bool, error) {
		out, err := s.cluster.Kubectl(ctx, nil, "-n", running.Namespace, "logs", running.Name)
		return err == nil && bytes.Contains(out, values[2].Data), nil
	})
	if err != nil {
		t.Fatalf("decoy pod's output not in its log: %v", err)
	}
	return values
}

// scanEtcd reads every key and value of etcd with etcdctl.
func (s *suite) scanEtcd(t *testing.T, scanner *sovereignty.Scanner) {
	t.Helper()
	cmd := exec.Command(filepath.Join(s.cluster.BinDir, "etcdctl"), "get", "", "--prefix", "-w", "json")
	cmd.Env = append(os.Environ(), s.cluster.Etcd...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("etcdctl get --prefix: %v: %s", err, strings.TrimSpace(stderr.String()))
	}
	kvs, err := sovereignty.ParseEtcdctlJSON(out)
	if err != nil {
		t.Fatal(err)
	}
	if err := scanner.ScanEtcd(kvs); err != nil {
		t.Fatal(err)
	}
}

// scanDisks scans the state directory (etcd's data, containerd's root and
// state, kubelet's root, logs, the baoserver's files), kubelet's root when
// it lies elsewhere, and the fixed host paths the cluster writes to. The
// scan skips memory-backed mounts, such as Phantom's volumes and its node
// state directory.
func (s *suite) scanDisks(t *testing.T, scanner *sovereignty.Scanner) {
	t.Helper()
	roots := []string{s.cluster.StateDir}
	if !strings.HasPrefix(s.cluster.KubeletRootDir+"/", s.cluster.StateDir+"/") {
		roots = append(roots, s.cluster.KubeletRootDir)
	}
	for _, path := range hostPathsOutsideState {
		if _, err := os.Stat(path); err == nil {
			roots = append(roots, path)
		}
	}
	for _, root := range roots {
		if err := scanner.ScanTree(root); err != nil {
			t.Fatalf("scan %s: %v", root, err)
		}
	}
}

// scanLogs scans the cluster's component logs, kubelet's container logs,
// the logs of the Phantom pods through the API server (previous
// containers included), the logs of deleted test pods and all events.
func (s *suite) scanLogs(t *testing.T, scanner *sovereignty.Scanner) {
	t.Helper()
	ctx := context.Background()
	for _, dir := range []string{"logs", "pod-logs"} {
		if err := scanner.ScanLogFiles(filepath.Join(s.cluster.StateDir, dir)); err != nil {
			t.Fatal(err)
		}
	}

	pods, err := s.kube.CoreV1().Pods(setup.Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(pods.Items) == 0 {
		t.Errorf("no pods in %s to read logs from", setup.Namespace)
	}
	for _, pod := range pods.Items {
		s.scanPodLog(t, scanner, pod, false)
		for _, status := range pod.Status.ContainerStatuses {
			if status.RestartCount > 0 {
				s.scanPodLog(t, scanner, pod, true)
				break
			}
		}
	}

	s.mu.Lock()
	for name, logs := range s.podLogs {
		if err := scanner.ScanLog("deleted pod "+name, bytes.NewReader(logs)); err != nil {
			t.Fatal(err)
		}
	}
	s.mu.Unlock()

	events, err := s.cluster.Kubectl(ctx, nil, "get", "events", "--all-namespaces", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	if err := scanner.ScanLog("events", bytes.NewReader(events)); err != nil {
		t.Fatal(err)
	}
}

func (s *suite) scanPodLog(t *testing.T, scanner *sovereignty.Scanner, pod corev1.Pod, previous bool) {
	t.Helper()
	args := []string{"-n", pod.Namespace, "logs", pod.Name, "--all-containers"}
	name := pod.Namespace + "/" + pod.Name
	if previous {
		args = append(args, "--previous")
		name += " (previous)"
	}
	out, err := s.cluster.Kubectl(context.Background(), nil, args...)
	if err != nil {
		t.Errorf("logs of %s: %v", name, err)
		return
	}
	if err := scanner.ScanLog(name, bytes.NewReader(out)); err != nil {
		t.Fatal(err)
	}
}

// scanMetrics scans the metrics pages of phantom-node and the webhook.
// The webhook's certificate is verified as the API server verifies it:
// with the CA bundle of its configuration, for its Service's DNS name.
func (s *suite) scanMetrics(t *testing.T, scanner *sovereignty.Scanner) {
	t.Helper()
	ctx := context.Background()
	pages := map[string]*http.Client{
		fmt.Sprintf("http://127.0.0.1:%d/metrics", setup.NodeMetricsPort): http.DefaultClient,
	}
	config, err := s.kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, setup.WebhookName, metav1.GetOptions{})
	if err == nil && hasCABundles(config) {
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(config.Webhooks[0].ClientConfig.CABundle)
		serverName := setup.WebhookName + "." + setup.Namespace + ".svc"
		transport := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: serverName, MinVersion: tls.VersionTLS12}}
		pages[fmt.Sprintf("https://127.0.0.1:%d/metrics", setup.WebhookPort)] = &http.Client{Transport: transport}
	} else {
		t.Errorf("webhook configuration %s has no CA bundle to verify the webhook's metrics endpoint (err %v)", setup.WebhookName, err)
	}

	for url, client := range pages {
		client := *client
		client.Timeout = 10 * time.Second
		resp, err := client.Get(url)
		if err != nil {
			t.Errorf("scrape %s: %v", url, err)
			continue
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Errorf("scrape %s: HTTP %d, %v", url, resp.StatusCode, err)
			continue
		}
		if err := scanner.ScanLog("metrics "+url, bytes.NewReader(body)); err != nil {
			t.Fatal(err)
		}
	}
}
