package setup

import (
	"bytes"
	"context"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

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

// EnvChart names another chart directory to install instead of
// charts/phantom, such as an unpacked released chart.
const EnvChart = "PHANTOM_E2E_CHART"

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
		ChartDir:       os.Getenv(EnvChart),
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
// driver on the node, and for the webhook configuration's CA bundle. It
// fails early when a pod of the release cannot start (crash loop, image
// missing), with the pods, events and logs of the release.
func WaitReady(ctx context.Context, c *cluster.Cluster, logf Logf) error {
	started := time.Now()
	kube, err := Clientset(c)
	if err != nil {
		return err
	}
	for _, w := range []struct{ kind, name string }{{"daemonset", NodeDaemonSetName}, {"deployment", WebhookName}} {
		err := poll(ctx, rolloutTimeout, func() (bool, error) {
			if err := podsCanStart(ctx, kube); err != nil {
				return false, err
			}
			return rolledOut(ctx, kube, w.kind, w.name)
		})
		if err != nil {
			return fmt.Errorf("wait for %s %s to roll out: %w%s", w.kind, w.name, err, describeRelease(ctx, c))
		}
		logf("%s %s rolled out after %s", w.kind, w.name, time.Since(started).Round(time.Second))
	}

	err = poll(ctx, rolloutTimeout, func() (bool, error) {
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

// rolledOut reports whether every pod of the workload runs the current
// template and is available.
func rolledOut(ctx context.Context, kube kubernetes.Interface, kind, name string) (bool, error) {
	switch kind {
	case "daemonset":
		ds, err := kube.AppsV1().DaemonSets(Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		st := ds.Status
		return st.ObservedGeneration >= ds.Generation && st.DesiredNumberScheduled > 0 &&
			st.UpdatedNumberScheduled == st.DesiredNumberScheduled && st.NumberAvailable == st.DesiredNumberScheduled, nil
	default:
		d, err := kube.AppsV1().Deployments(Namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		st, want := d.Status, ptr.Deref(d.Spec.Replicas, 1)
		return st.ObservedGeneration >= d.Generation && st.UpdatedReplicas == want &&
			st.AvailableReplicas == want && st.Replicas == want, nil
	}
}

// podsCanStart returns an error when a container of the release waits for
// a reason that does not pass by itself.
func podsCanStart(ctx context.Context, kube kubernetes.Interface) error {
	pods, err := kube.CoreV1().Pods(Namespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for _, pod := range pods.Items {
		for _, st := range pod.Status.ContainerStatuses {
			if w := st.State.Waiting; w != nil && stuckReasons[w.Reason] && (w.Reason != "CrashLoopBackOff" || st.RestartCount >= 2) {
				return fmt.Errorf("container %s of pod %s cannot start: %s: %s", st.Name, pod.Name, w.Reason, w.Message)
			}
		}
	}
	return nil
}

// stuckReasons are container waiting reasons that waiting does not cure.
var stuckReasons = map[string]bool{
	"CrashLoopBackOff":           true,
	"ErrImageNeverPull":          true,
	"ImagePullBackOff":           true,
	"ErrImagePull":               true,
	"CreateContainerConfigError": true,
	"InvalidImageName":           true,
}

// describeRelease returns the pods, recent events and log tails of the
// release namespace, to explain a rollout that did not finish.
func describeRelease(ctx context.Context, c *cluster.Cluster) string {
	var b strings.Builder
	if out, err := c.Kubectl(ctx, nil, "-n", Namespace, "get", "pods", "-o", "wide"); err == nil {
		fmt.Fprintf(&b, "\npods:\n%s", out)
	}
	if out, err := c.Kubectl(ctx, nil, "-n", Namespace, "get", "events", "--sort-by=.lastTimestamp"); err == nil {
		fmt.Fprintf(&b, "events:\n%s", out)
	}
	for _, workload := range []string{"daemonset/" + NodeDaemonSetName, "deployment/" + WebhookName} {
		if out, err := c.Kubectl(ctx, nil, "-n", Namespace, "logs", workload, "--all-containers", "--tail=20"); err == nil {
			fmt.Fprintf(&b, "last log lines of %s:\n%s", workload, out)
		}
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
