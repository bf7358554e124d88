package chart

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer/json"
	"k8s.io/client-go/kubernetes/scheme"

	"github.com/phantom-sec/phantom/tests/chart/render"
)

// Paths relative to the repository root.
const (
	chartPath        = "charts/phantom"
	deployValuesPath = "deploy/values.yaml"
	deployOutputPath = "deploy/phantom.yaml"
	allValuesPath    = "tests/chart/testdata/values-all.yaml"
	goldenDir        = "tests/chart/testdata/golden"
)

// testAddress is the OpenBao address of test renders; the chart requires one.
const testAddress = "https://openbao.example.eu:8200"

// repoRoot returns the repository root, found from this file's location so
// that the tests run from any working directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("find the test's source file: runtime.Caller failed")
	}
	return filepath.Join(filepath.Dir(file), "..", "..")
}

func repoPath(t *testing.T, rel string) string {
	t.Helper()
	return filepath.Join(repoRoot(t), filepath.FromSlash(rel))
}

// minimalValues returns the only value the chart requires.
func minimalValues() map[string]any {
	return map[string]any{"openbao": map[string]any{"address": testAddress}}
}

// allValues returns the values of testdata/values-all.yaml.
func allValues(t *testing.T) map[string]any {
	t.Helper()
	values, err := render.ReadValuesFiles(repoPath(t, allValuesPath))
	if err != nil {
		t.Fatal(err)
	}
	return values
}

// renderValues renders the chart with values over its defaults, failing the
// test on any error.
func renderValues(t *testing.T, values map[string]any) string {
	t.Helper()
	out, err := render.Render(render.Options{ChartDir: repoPath(t, chartPath), Values: values})
	if err != nil {
		t.Fatalf("render chart: %v", err)
	}
	return out
}

// renderError renders the chart and returns its error, failing the test
// when the render succeeds.
func renderError(t *testing.T, values map[string]any) error {
	t.Helper()
	_, err := render.Render(render.Options{ChartDir: repoPath(t, chartPath), Values: values})
	if err == nil {
		t.Fatal("render chart: no error, want one")
	}
	return err
}

// withSet returns minimalValues with `--set` style assignments applied.
func withSet(t *testing.T, assignments ...string) map[string]any {
	t.Helper()
	values := minimalValues()
	if err := render.SetValues(values, assignments...); err != nil {
		t.Fatal(err)
	}
	return values
}

// decoder returns a serializer that decodes YAML into typed objects of the
// client-go scheme plus the Prometheus Operator's monitoring.coreos.com/v1
// kinds. It is strict: an unknown or duplicate field is an error.
func decoder(t *testing.T) *json.Serializer {
	t.Helper()
	s := apiruntime.NewScheme()
	for _, add := range []func(*apiruntime.Scheme) error{scheme.AddToScheme, monitoringv1.AddToScheme} {
		if err := add(s); err != nil {
			t.Fatalf("build scheme: %v", err)
		}
	}
	return json.NewSerializerWithOptions(json.DefaultMetaFactory, s, s, json.SerializerOptions{Yaml: true, Strict: true})
}

// document is one rendered YAML document and the template it came from.
type document struct {
	source string
	body   string
}

// splitDocuments splits `helm template` output into its documents.
func splitDocuments(manifests string) []document {
	var docs []document
	for _, part := range strings.Split(manifests, "\n---\n") {
		part = strings.TrimPrefix(part, "---\n")
		source := ""
		var body []string
		for _, line := range strings.Split(part, "\n") {
			if s, ok := strings.CutPrefix(line, "# Source: "); ok && source == "" {
				source = s
				continue
			}
			body = append(body, line)
		}
		text := strings.Join(body, "\n")
		if strings.TrimSpace(stripComments(text)) == "" {
			continue
		}
		docs = append(docs, document{source: source, body: text})
	}
	return docs
}

func stripComments(text string) string {
	var kept []string
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(line), "#") {
			kept = append(kept, line)
		}
	}
	return strings.Join(kept, "\n")
}

// decodeAll decodes every document of manifests strictly.
func decodeAll(t *testing.T, manifests string) []apiruntime.Object {
	t.Helper()
	dec := decoder(t)
	var objects []apiruntime.Object
	for _, doc := range splitDocuments(manifests) {
		obj, gvk, err := dec.Decode([]byte(doc.body), nil, nil)
		if err != nil {
			t.Errorf("decode %s (%v): %v", doc.source, gvk, err)
			continue
		}
		objects = append(objects, obj)
	}
	if len(objects) == 0 {
		t.Fatal("rendered manifests contain no object")
	}
	return objects
}

// objectsOf returns the objects of type T.
func objectsOf[T apiruntime.Object](objects []apiruntime.Object) []T {
	var found []T
	for _, obj := range objects {
		if typed, ok := obj.(T); ok {
			found = append(found, typed)
		}
	}
	return found
}

// oneOf returns the only object of type T, failing the test unless there is
// exactly one.
func oneOf[T apiruntime.Object](t *testing.T, objects []apiruntime.Object) T {
	t.Helper()
	found := objectsOf[T](objects)
	if len(found) != 1 {
		var zero T
		t.Fatalf("rendered objects of type %T: got %d, want 1", zero, len(found))
	}
	return found[0]
}

// container returns the only container of a pod template.
func container(t *testing.T, spec corev1.PodSpec) corev1.Container {
	t.Helper()
	if len(spec.Containers) != 1 {
		t.Fatalf("containers: got %d, want 1", len(spec.Containers))
	}
	return spec.Containers[0]
}

// flagValues parses "--name=value" arguments into a map, failing the test
// on any other form, so that a value is never taken for a flag.
func flagValues(t *testing.T, args []string) map[string]string {
	t.Helper()
	flags := make(map[string]string, len(args))
	for _, arg := range args {
		name, value, ok := strings.Cut(strings.TrimPrefix(arg, "--"), "=")
		if !ok || !strings.HasPrefix(arg, "--") {
			t.Fatalf("argument %q: want the form --name=value", arg)
		}
		if _, dup := flags[name]; dup {
			t.Fatalf("flag --%s given twice", name)
		}
		flags[name] = value
	}
	return flags
}

func nodeDaemonSet(t *testing.T, objects []apiruntime.Object) *appsv1.DaemonSet {
	t.Helper()
	return oneOf[*appsv1.DaemonSet](t, objects)
}

func webhookDeployment(t *testing.T, objects []apiruntime.Object) *appsv1.Deployment {
	t.Helper()
	return oneOf[*appsv1.Deployment](t, objects)
}

// readFile returns the content of a repository file, failing the test when
// it is missing.
func readFile(t *testing.T, rel string) string {
	t.Helper()
	data, err := os.ReadFile(repoPath(t, rel))
	if err != nil {
		t.Fatalf("read %s: %v", rel, err)
	}
	return string(data)
}

// errorContains returns an error naming each part that err's message lacks,
// or nil when it contains them all.
func errorContains(err error, parts ...string) error {
	var missing []error
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			missing = append(missing, fmt.Errorf("missing %q", p))
		}
	}
	return errors.Join(missing...)
}
