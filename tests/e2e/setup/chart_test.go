package setup

import (
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

func testOptions() ChartOptions {
	return ChartOptions{
		APIServerPort:  16443,
		KubeletDir:     "/tmp/e2e/kubelet",
		NodeStateDir:   "/tmp/e2e/phantom-node",
		OpenBao:        &OpenBao{Address: "https://127.0.0.1:18200", CACertPEM: []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n")},
		TokenInSecrets: true,
	}
}

func typed[T runtime.Object](t *testing.T, obj *unstructured.Unstructured, into T) T {
	t.Helper()
	if obj == nil {
		t.Fatal("object not rendered")
	}
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, into); err != nil {
		t.Fatal(err)
	}
	return into
}

func TestRenderChartPatchesWorkloads(t *testing.T) {
	m, err := RenderChart(testOptions())
	if err != nil {
		t.Fatal(err)
	}

	ds := typed(t, m.Find("DaemonSet", NodeDaemonSetName), &appsv1.DaemonSet{})
	deploy := typed(t, m.Find("Deployment", WebhookName), &appsv1.Deployment{})
	for name, spec := range map[string]corev1.PodSpec{"DaemonSet": ds.Spec.Template.Spec, "Deployment": deploy.Spec.Template.Spec} {
		if !spec.HostNetwork || spec.DNSPolicy != corev1.DNSDefault {
			t.Errorf("%s: hostNetwork %t, dnsPolicy %q; want true and Default", name, spec.HostNetwork, spec.DNSPolicy)
		}
		env := spec.Containers[0].Env
		for _, want := range []corev1.EnvVar{{Name: "KUBERNETES_SERVICE_HOST", Value: "127.0.0.1"}, {Name: "KUBERNETES_SERVICE_PORT", Value: "16443"}} {
			if !slices.Contains(env, want) {
				t.Errorf("%s: env lacks %s=%s", name, want.Name, want.Value)
			}
		}
	}
	if !slices.Contains(ds.Spec.Template.Spec.Containers[0].Args, "--metrics-addr=127.0.0.1:19810") {
		t.Errorf("node args %q lack --metrics-addr=127.0.0.1:19810", ds.Spec.Template.Spec.Containers[0].Args)
	}
	if !slices.Contains(deploy.Spec.Template.Spec.Containers[0].Args, "--listen-addr=127.0.0.1:18443") {
		t.Errorf("webhook args %q lack --listen-addr=127.0.0.1:18443", deploy.Spec.Template.Spec.Containers[0].Args)
	}
	if ru := deploy.Spec.Strategy.RollingUpdate; ru == nil || ru.MaxSurge.IntValue() != 0 || ru.MaxUnavailable.IntValue() != 1 {
		t.Errorf("webhook strategy = %+v, want a rolling update with maxSurge 0 and maxUnavailable 1", deploy.Spec.Strategy)
	}
	if got := ds.Spec.Template.Spec.Containers[0].Image; got != "phantom/phantom-node:e2e" {
		t.Errorf("node image = %q, want phantom/phantom-node:e2e", got)
	}
	if m.Objects[0].GetKind() != "Namespace" || m.Objects[0].GetName() != Namespace {
		t.Errorf("first object is %s %s, want Namespace %s", m.Objects[0].GetKind(), m.Objects[0].GetName(), Namespace)
	}
}

func TestRenderChartKeepsWebhookConfiguration(t *testing.T) {
	asIs, err := RenderChartAsIs(testOptions())
	if err != nil {
		t.Fatal(err)
	}
	patched, err := RenderChart(testOptions())
	if err != nil {
		t.Fatal(err)
	}

	for _, kind := range []string{"MutatingWebhookConfiguration", "CSIDriver", "Service"} {
		var name string
		switch kind {
		case "CSIDriver":
			name = DriverName
		default:
			name = WebhookName
		}
		if diff := cmp.Diff(asIs.Find(kind, name).Object, patched.Find(kind, name).Object); diff != "" {
			t.Errorf("%s %s changed by the patches (-as rendered +patched):\n%s", kind, name, diff)
		}
	}
	mwc := typed(t, patched.Find("MutatingWebhookConfiguration", WebhookName), &admissionregistrationv1.MutatingWebhookConfiguration{})
	for _, hook := range mwc.Webhooks {
		if hook.ClientConfig.Service == nil || hook.ClientConfig.Service.Name != WebhookName {
			t.Errorf("webhook %s clientConfig = %+v, want the Service %s", hook.Name, hook.ClientConfig, WebhookName)
		}
	}
}

func TestRenderChartPatchesListed(t *testing.T) {
	m, err := RenderChart(testOptions())
	if err != nil {
		t.Fatal(err)
	}
	joined := strings.Join(m.Patches, "\n")
	for _, want := range []string{"hostNetwork true", "KUBERNETES_SERVICE_HOST", "--metrics-addr=127.0.0.1:", "--listen-addr=127.0.0.1:", "maxSurge 0"} {
		if !strings.Contains(joined, want) {
			t.Errorf("patch list lacks %q:\n%s", want, joined)
		}
	}

	// Patching patched objects again changes nothing.
	again := &Manifests{Objects: m.Objects}
	if err := patchForCluster(again, testOptions()); err != nil {
		t.Fatal(err)
	}
	if len(again.Patches) != 0 {
		t.Errorf("second patch run changed %q, want nothing", again.Patches)
	}
}

func TestYAMLRoundTrip(t *testing.T) {
	m, err := RenderChart(testOptions())
	if err != nil {
		t.Fatal(err)
	}
	data, err := m.YAML()
	if err != nil {
		t.Fatal(err)
	}
	objects, err := decodeObjects(data)
	if err != nil {
		t.Fatal(err)
	}
	if len(objects) != len(m.Objects) {
		t.Fatalf("decoded %d objects from YAML, rendered %d", len(objects), len(m.Objects))
	}
	for i := range objects {
		if diff := cmp.Diff(m.Objects[i].Object, objects[i].Object); diff != "" {
			t.Errorf("object %d (%s) differs after a YAML round trip (-want +got):\n%s", i, m.Objects[i].GetKind(), diff)
		}
	}
}
