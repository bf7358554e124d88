package setup

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/phantom-sec/phantom/tests/e2e/cluster"
)

// FieldManager is the server-side apply field manager of the installation.
const FieldManager = "phantom-e2e"

// rolloutTimeout bounds each wait of Install.
const rolloutTimeout = 3 * time.Minute

// NodeStateDir is the node plugin's state directory under the cluster's
// state directory. Install mounts a tmpfs there, as /run is on a tmpfs on
// a typical node; down.sh unmounts it with the rest.
func NodeStateDir(c *cluster.Cluster) string {
	return filepath.Join(c.StateDir, "phantom-node")
}

// OpenBaoDir is where hack/e2e.sh starts cmd/baoserver.
func OpenBaoDir(c *cluster.Cluster) string {
	return filepath.Join(c.StateDir, "openbao")
}

// ChartOptionsFor returns the chart options for cluster c and OpenBao o.
func ChartOptionsFor(c *cluster.Cluster, o *OpenBao, tokenInSecrets bool) (ChartOptions, error) {
	u, err := url.Parse(c.APIServer)
	if err != nil {
		return ChartOptions{}, fmt.Errorf("parse API server URL %q: %w", c.APIServer, err)
	}
	port, err := strconv.Atoi(u.Port())
	if err != nil {
		return ChartOptions{}, fmt.Errorf("API server URL %q has no port", c.APIServer)
	}
	return ChartOptions{
		APIServerPort:  port,
		KubeletDir:     c.KubeletRootDir,
		NodeStateDir:   NodeStateDir(c),
		OpenBao:        o,
		TokenInSecrets: tokenInSecrets,
	}, nil
}

// Clientset returns a Kubernetes client with the cluster's admin
// credentials.
func Clientset(c *cluster.Cluster) (kubernetes.Interface, error) {
	config, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("load kubeconfig %s: %w", c.Kubeconfig, err)
	}
	config.QPS, config.Burst = 50, 100
	client, err := kubernetes.NewForConfig(config)
	if err != nil {
		return nil, fmt.Errorf("create Kubernetes client: %w", err)
	}
	return client, nil
}

// Logf receives progress lines.
type Logf func(format string, args ...any)

// Install renders the chart for c, applies it with server-side apply and
// waits until the node plugin is registered with kubelet and the webhook
// configuration has a CA bundle. Applying again with other options is an
// upgrade.
func Install(ctx context.Context, c *cluster.Cluster, o ChartOptions, logf Logf) (*Manifests, error) {
	if err := EnsureTmpfs(o.NodeStateDir); err != nil {
		return nil, err
	}
	m, err := RenderChart(o)
	if err != nil {
		return nil, err
	}
	for _, p := range m.Patches {
		logf("patched for the end-to-end cluster: %s", p)
	}
	if err := Apply(ctx, c, m, false); err != nil {
		return nil, err
	}
	if err := ForwardService(ctx, c, Namespace, WebhookName, WebhookPort); err != nil {
		return nil, err
	}
	return m, WaitReady(ctx, c, logf)
}

// Apply applies m with server-side apply, or only validates it on the
// server (every admission step, nothing stored) when dryRun is true.
func Apply(ctx context.Context, c *cluster.Cluster, m *Manifests, dryRun bool) error {
	data, err := m.YAML()
	if err != nil {
		return err
	}
	args := []string{"apply", "--server-side", "--force-conflicts", "--field-manager=" + FieldManager, "-f", "-"}
	if dryRun {
		args = append(args, "--dry-run=server")
	}
	if _, err := c.Kubectl(ctx, bytes.NewReader(data), args...); err != nil {
		return fmt.Errorf("apply chart: %w", err)
	}
	return nil
}

// WaitReady waits for both workloads to roll out, for kubelet to list the
// driver on the node, and for the webhook configuration's CA bundle.
func WaitReady(ctx context.Context, c *cluster.Cluster, logf Logf) error {
	started := time.Now()
	timeout := "--timeout=" + rolloutTimeout.String()
	for _, workload := range []string{"daemonset/" + NodeDaemonSetName, "deployment/" + WebhookName} {
		if _, err := c.Kubectl(ctx, nil, "-n", Namespace, "rollout", "status", workload, timeout); err != nil {
			return fmt.Errorf("wait for %s: %w%s", workload, err, describeWorkload(ctx, c, workload))
		}
		logf("%s rolled out after %s", workload, time.Since(started).Round(time.Second))
	}

	err := poll(ctx, rolloutTimeout, func() (bool, error) {
		out, err := c.Kubectl(ctx, nil, "get", "csinode", c.NodeName, "-o", "jsonpath={.spec.drivers[*].name}")
		return err == nil && strings.Contains(" "+string(out)+" ", " "+DriverName+" "), nil
	})
	if err != nil {
		return fmt.Errorf("wait for kubelet to register %s on node %s: %w", DriverName, c.NodeName, err)
	}
	logf("kubelet registered %s after %s", DriverName, time.Since(started).Round(time.Second))

	err = poll(ctx, rolloutTimeout, func() (bool, error) {
		out, err := c.Kubectl(ctx, nil, "get", "mutatingwebhookconfiguration", WebhookName, "-o", "jsonpath={.webhooks[*].clientConfig.caBundle}")
		return err == nil && len(strings.Fields(string(out))) > 0, nil
	})
	if err != nil {
		return fmt.Errorf("wait for the webhook to fill the caBundle of MutatingWebhookConfiguration %s: %w", WebhookName, err)
	}
	logf("webhook configuration has a CA bundle after %s", time.Since(started).Round(time.Second))
	return nil
}

// describeWorkload returns the pods and recent events of the release
// namespace, to explain a rollout that did not finish.
func describeWorkload(ctx context.Context, c *cluster.Cluster, workload string) string {
	var b strings.Builder
	if out, err := c.Kubectl(ctx, nil, "-n", Namespace, "get", "pods", "-o", "wide"); err == nil {
		fmt.Fprintf(&b, "\npods:\n%s", out)
	}
	if out, err := c.Kubectl(ctx, nil, "-n", Namespace, "get", "events", "--sort-by=.lastTimestamp"); err == nil {
		fmt.Fprintf(&b, "events:\n%s", out)
	}
	if out, err := c.Kubectl(ctx, nil, "-n", Namespace, "logs", workload, "--all-containers", "--tail=30"); err == nil {
		fmt.Fprintf(&b, "logs of %s:\n%s", workload, out)
	}
	return b.String()
}

// poll calls check every half second until it returns true or an error,
// or until timeout.
func poll(ctx context.Context, timeout time.Duration, check func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	ticker := time.NewTicker(500 * time.Millisecond)
	defer ticker.Stop()
	for {
		done, err := check()
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not done after %s: %w", timeout, ctx.Err())
		case <-ticker.C:
		}
	}
}
