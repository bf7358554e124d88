package setup

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/phantom-sec/phantom/tests/chart/render"
)

// Release settings of the end-to-end installation.
const (
	ReleaseName = "phantom"
	Namespace   = "phantom-system"
	// ImageTag is the tag that hack/e2e.sh gives the images it builds.
	ImageTag = "e2e"
	// NodeMetricsPort and WebhookPort are loopback ports on the node, next
	// to the cluster's own (see cluster/lib.sh). The webhook Service's
	// ClusterIP is forwarded to WebhookPort.
	NodeMetricsPort = 19810
	WebhookPort     = 18443
	// RefreshInterval is the node plugin's refresh interval here: the
	// minimum a volume may ask for, so rotation tests wait seconds.
	RefreshInterval = "10s"

	NodeDaemonSetName = ReleaseName + "-node"
	WebhookName       = ReleaseName + "-webhook"
	DriverName        = "secrets.phantom.dev"
)

// ChartOptions select what RenderChart renders.
type ChartOptions struct {
	// ChartDir is the chart's directory; default <repository>/charts/phantom.
	ChartDir string
	// APIServerPort is where pods reach the API server on the host network.
	APIServerPort int
	// KubeletDir is kubelet's --root-dir.
	KubeletDir string
	// NodeStateDir is the node plugin's state directory on the host, which
	// must be a tmpfs.
	NodeStateDir string
	// OpenBao is where the node plugin reads secrets.
	OpenBao *OpenBao
	// ImageTag tags both images; default ImageTag.
	ImageTag string
	// TokenInSecrets is the chart value csiDriver.serviceAccountTokenInSecrets.
	TokenInSecrets bool
}

// Values returns the chart values of the end-to-end installation.
func (o ChartOptions) Values() map[string]any {
	tag := o.ImageTag
	if tag == "" {
		tag = ImageTag
	}
	image := func(name string) map[string]any {
		return map[string]any{"repository": "phantom/" + name, "tag": tag, "pullPolicy": "Never"}
	}
	return map[string]any{
		"kubeletDir": o.KubeletDir,
		"openbao": map[string]any{
			"address": o.OpenBao.Address,
			"caCert":  string(o.OpenBao.CACertPEM),
		},
		"csiDriver": map[string]any{
			"serviceAccountTokenInSecrets": o.TokenInSecrets,
		},
		"node": map[string]any{
			"image":       image("phantom-node"),
			"metricsPort": NodeMetricsPort,
			"stateDir":    o.NodeStateDir,
			// Debug logs are scanned for secrets too: no value may appear at
			// any level.
			"logLevel":        "debug",
			"refreshInterval": RefreshInterval,
		},
		"webhook": map[string]any{
			"image": image("phantom-webhook"),
			// Host-network pods bind the same port, so a second replica on
			// the single node would stay Pending. A budget for one replica
			// would block every eviction, and the chart rejects it.
			"replicas":            1,
			"podDisruptionBudget": map[string]any{"enabled": false},
			"port":                WebhookPort,
			"logLevel":            "debug",
		},
	}
}

// Manifests are the rendered and patched objects of one installation.
type Manifests struct {
	// Objects are in the order of `helm template`, a Namespace first.
	Objects []*unstructured.Unstructured
	// Patches describe each change made for the end-to-end cluster, for
	// the log.
	Patches []string
}

// YAML returns the objects as one multi-document YAML stream.
func (m *Manifests) YAML() ([]byte, error) {
	var out bytes.Buffer
	for _, obj := range m.Objects {
		data, err := yaml.Marshal(obj.Object)
		if err != nil {
			return nil, fmt.Errorf("encode %s %s: %w", obj.GetKind(), obj.GetName(), err)
		}
		out.WriteString("---\n")
		out.Write(data)
	}
	return out.Bytes(), nil
}

// Find returns the object of kind and name, or nil.
func (m *Manifests) Find(kind, name string) *unstructured.Unstructured {
	for _, obj := range m.Objects {
		if obj.GetKind() == kind && obj.GetName() == name {
			return obj
		}
	}
	return nil
}

// RenderChart renders the chart as deploy/phantom.yaml is made (Helm's Go
// packages, a Namespace that admits privileged pods first) with the
// end-to-end values, then patches what the chart cannot express for a
// cluster whose only network is the host's loopback. See patchForCluster.
func RenderChart(o ChartOptions) (*Manifests, error) {
	m, err := RenderChartAsIs(o)
	if err != nil {
		return nil, err
	}
	if err := patchForCluster(m, o); err != nil {
		return nil, err
	}
	return m, nil
}

// RenderChartAsIs renders the chart like RenderChart, without the patches:
// the objects that the same values give on any cluster.
func RenderChartAsIs(o ChartOptions) (*Manifests, error) {
	if o.OpenBao == nil {
		return nil, errors.New("render chart: OpenBao is not set")
	}
	if o.ChartDir == "" {
		root, err := RepositoryRoot()
		if err != nil {
			return nil, err
		}
		o.ChartDir = filepath.Join(root, "charts", "phantom")
	}
	text, err := render.Deploy(render.Options{
		ChartDir:    o.ChartDir,
		ReleaseName: ReleaseName,
		Namespace:   Namespace,
		Values:      o.Values(),
	})
	if err != nil {
		return nil, err
	}
	objects, err := decodeObjects([]byte(text))
	if err != nil {
		return nil, err
	}
	return &Manifests{Objects: objects}, nil
}

// decodeObjects splits a multi-document YAML stream into objects. Numbers
// decode as int64, as the API machinery's own decoding makes them.
func decodeObjects(data []byte) ([]*unstructured.Unstructured, error) {
	reader := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var objects []*unstructured.Unstructured
	for {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			return objects, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read rendered manifests: %w", err)
		}
		jsonDoc, err := yaml.YAMLToJSON(doc)
		if err != nil {
			return nil, fmt.Errorf("decode rendered manifest: %w", err)
		}
		if trimmed := bytes.TrimSpace(jsonDoc); len(trimmed) == 0 || bytes.Equal(trimmed, []byte("null")) {
			continue
		}
		obj := &unstructured.Unstructured{}
		if err := obj.UnmarshalJSON(jsonDoc); err != nil {
			return nil, fmt.Errorf("decode rendered manifest: %w", err)
		}
		objects = append(objects, obj)
	}
}

// patchForCluster adapts the rendered objects to the end-to-end cluster,
// where pods have no network of their own and no service proxy runs:
//
//   - Both workloads use the host network and reach the API server at
//     127.0.0.1, not through the kubernetes Service.
//   - The node plugin's metrics server and the webhook's listener bind
//     127.0.0.1 instead of every interface.
//   - The webhook Deployment replaces its pod before starting the new one,
//     because two host-network pods cannot listen on one port and a
//     surge pod would never be scheduled.
//
// The MutatingWebhookConfiguration stays as rendered: ForwardService
// makes the webhook Service's ClusterIP reach the pod.
//
// A patch whose change the chart already makes records nothing, so the
// list shows what the chart lacks for this cluster.
func patchForCluster(m *Manifests, o ChartOptions) error {
	apiEnv := []corev1.EnvVar{
		{Name: "KUBERNETES_SERVICE_HOST", Value: "127.0.0.1"},
		{Name: "KUBERNETES_SERVICE_PORT", Value: strconv.Itoa(o.APIServerPort)},
	}

	ds := m.Find("DaemonSet", NodeDaemonSetName)
	if ds == nil {
		return fmt.Errorf("rendered chart has no DaemonSet %s", NodeDaemonSetName)
	}
	err := patchTyped(ds, &appsv1.DaemonSet{}, func(obj *appsv1.DaemonSet) {
		m.patchPodSpec("DaemonSet "+obj.Name, &obj.Spec.Template.Spec, apiEnv)
		m.bindLoopback("DaemonSet "+obj.Name, &obj.Spec.Template.Spec, "--metrics-addr=")
	})
	if err != nil {
		return err
	}

	deploy := m.Find("Deployment", WebhookName)
	if deploy == nil {
		return fmt.Errorf("rendered chart has no Deployment %s", WebhookName)
	}
	return patchTyped(deploy, &appsv1.Deployment{}, func(obj *appsv1.Deployment) {
		m.patchPodSpec("Deployment "+obj.Name, &obj.Spec.Template.Spec, apiEnv)
		m.bindLoopback("Deployment "+obj.Name, &obj.Spec.Template.Spec, "--listen-addr=")
		m.replaceBeforeSurge("Deployment "+obj.Name, &obj.Spec.Strategy)
	})
}

func (m *Manifests) patchPodSpec(object string, spec *corev1.PodSpec, env []corev1.EnvVar) {
	if !spec.HostNetwork {
		spec.HostNetwork = true
		// The cluster runs no DNS service, so pods use the host's resolver.
		spec.DNSPolicy = corev1.DNSDefault
		m.Patches = append(m.Patches, object+": hostNetwork true, dnsPolicy Default")
	}
	for i := range spec.Containers {
		c := &spec.Containers[i]
		for _, want := range env {
			if hasEnv(c.Env, want) {
				continue
			}
			c.Env = append(c.Env, want)
			m.Patches = append(m.Patches, fmt.Sprintf("%s: container %s env %s=%s", object, c.Name, want.Name, want.Value))
		}
	}
}

// bindLoopback rewrites the argument flag=:PORT to flag=127.0.0.1:PORT.
func (m *Manifests) bindLoopback(object string, spec *corev1.PodSpec, flag string) {
	for i := range spec.Containers {
		c := &spec.Containers[i]
		for j, arg := range c.Args {
			port, ok := strings.CutPrefix(arg, flag+":")
			if !ok {
				continue
			}
			c.Args[j] = flag + "127.0.0.1:" + port
			m.Patches = append(m.Patches, fmt.Sprintf("%s: container %s %s", object, c.Name, c.Args[j]))
		}
	}
}

// replaceBeforeSurge sets a rolling update that stops an old pod before it
// starts a new one.
func (m *Manifests) replaceBeforeSurge(object string, strategy *appsv1.DeploymentStrategy) {
	zero, one := intstr.FromInt32(0), intstr.FromInt32(1)
	rolling := strategy.RollingUpdate
	if strategy.Type == appsv1.RecreateDeploymentStrategyType ||
		(rolling != nil && rolling.MaxSurge != nil && rolling.MaxSurge.IntValue() == 0 && rolling.MaxUnavailable != nil && rolling.MaxUnavailable.IntValue() > 0) {
		return
	}
	strategy.Type = appsv1.RollingUpdateDeploymentStrategyType
	strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{MaxSurge: &zero, MaxUnavailable: &one}
	m.Patches = append(m.Patches, object+": rolling update with maxSurge 0, maxUnavailable 1")
}

func hasEnv(env []corev1.EnvVar, want corev1.EnvVar) bool {
	for _, e := range env {
		if e.Name == want.Name && e.Value == want.Value && e.ValueFrom == nil {
			return true
		}
	}
	return false
}

// patchTyped converts obj to the typed into, applies change and writes the
// result back into obj.
func patchTyped[T runtime.Object](obj *unstructured.Unstructured, into T, change func(T)) error {
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, into); err != nil {
		return fmt.Errorf("convert %s %s: %w", obj.GetKind(), obj.GetName(), err)
	}
	change(into)
	out, err := runtime.DefaultUnstructuredConverter.ToUnstructured(into)
	if err != nil {
		return fmt.Errorf("convert %s %s back: %w", obj.GetKind(), obj.GetName(), err)
	}
	// The typed round trip adds empty status and creationTimestamp fields,
	// which server-side apply would claim for this field manager.
	delete(out, "status")
	unstructured.RemoveNestedField(out, "metadata", "creationTimestamp")
	unstructured.RemoveNestedField(out, "spec", "template", "metadata", "creationTimestamp")
	obj.Object = out
	return nil
}

// RepositoryRoot returns the directory of Phantom's go.mod, searched from
// the working directory upwards.
func RepositoryRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("find repository root: %w", err)
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(data, []byte("module github.com/phantom-sec/phantom\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("find repository root: no go.mod of github.com/phantom-sec/phantom above the working directory")
		}
		dir = parent
	}
}
