package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/admission")

const testOwnNamespace = "phantom-system"

// fakeNamespaces returns labels from a map; a missing namespace is an error.
type fakeNamespaces map[string]map[string]string

func (f fakeNamespaces) NamespaceLabels(_ context.Context, name string) (map[string]string, error) {
	labels, ok := f[name]
	if !ok {
		return nil, errors.New("namespace " + name + " not found")
	}
	return labels, nil
}

var testNamespaces = fakeNamespaces{
	"team-a":         {LabelInject: InjectEnabled, "kubernetes.io/metadata.name": "team-a"},
	"plain":          {"kubernetes.io/metadata.name": "plain"},
	"kube-system":    {LabelInject: InjectEnabled},
	testOwnNamespace: {LabelInject: InjectEnabled},
}

func newTestMutator(t testing.TB, namespaces NamespaceLabeler) *Mutator {
	t.Helper()
	m, err := NewMutator(MutatorConfig{DriverName: DefaultDriverName, OwnNamespace: testOwnNamespace, Namespaces: namespaces})
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func newTestHandler(t testing.TB, namespaces NamespaceLabeler) (*Handler, *Metrics) {
	t.Helper()
	metrics, err := NewMetrics(prometheus.NewRegistry())
	if err != nil {
		t.Fatal(err)
	}
	h, err := NewHandler(HandlerConfig{
		Mutator: newTestMutator(t, namespaces),
		Metrics: metrics,
		Logger:  slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	return h, metrics
}

// golden is the expected outcome of one fixture.
type golden struct {
	Allowed    bool             `json:"allowed"`
	Code       int32            `json:"code,omitempty"`
	Message    string           `json:"message,omitempty"`
	Patch      []map[string]any `json:"patch,omitempty"`
	PatchedPod map[string]any   `json:"patchedPod,omitempty"`
}

func TestAdmissionFixtures(t *testing.T) {
	t.Parallel()

	tests := []struct {
		fixture string
		result  string
		code    int32
		// message lists parts the rejection message must contain, checked
		// apart from the golden file so -update cannot bless a wrong one.
		message []string
	}{
		{fixture: "namespace-enabled", result: ResultMutated},
		{fixture: "pod-label-enabled", result: ResultMutated},
		{fixture: "pod-label-disabled", result: ResultSkipped},
		{fixture: "pod-label-invalid", result: ResultRejected, code: 400, message: []string{`metadata.labels["phantom.dev/inject"] is "yes"`, `use "enabled" or "disabled"`}},
		{fixture: "namespace-not-enabled", result: ResultSkipped},
		{fixture: "kube-system-excluded", result: ResultSkipped},
		{fixture: "own-namespace-excluded", result: ResultSkipped},
		{fixture: "update-operation", result: ResultSkipped},
		{fixture: "init-containers", result: ResultMutated},
		{fixture: "containers-annotation", result: ResultMutated},
		{fixture: "containers-unknown", result: ResultRejected, code: 400, message: []string{`names container "sidecar"`, "(app, proxy)"}},
		{fixture: "containers-empty-list", result: ResultRejected, code: 400, message: []string{"lists no container"}},
		{fixture: "mount-path-annotation", result: ResultMutated},
		{fixture: "mount-path-relative", result: ResultRejected, code: 400, message: []string{`metadata.annotations["phantom.dev/mount-path"] is "run/secrets"`, "absolute, clean path"}},
		{fixture: "mount-path-unclean", result: ResultRejected, code: 400, message: []string{`"/run/secrets/../phantom/"`}},
		{fixture: "mount-path-taken", result: ResultRejected, code: 403, message: []string{`spec.containers[0].volumeMounts[0] (container "app") mounts volume "tokens"`, "phantom.dev/mount-path to a free path"}},
		{fixture: "mount-path-nested", result: ResultRejected, code: 403, message: []string{`mounts volume "extra" at "/run/secrets/phantom/extra"`}},
		{fixture: "mount-path-parent", result: ResultMutated},
		{fixture: "volume-name-emptydir", result: ResultRejected, code: 403, message: []string{`spec.volumes[0] "phantom-secrets" is not a CSI volume`, "rename your volume"}},
		{fixture: "volume-name-other-driver", result: ResultRejected, code: 403, message: []string{`driver "secrets-store.csi.k8s.io"`}},
		{fixture: "declared-volume-missing-mount", result: ResultMutated},
		{fixture: "declared-volume-complete", result: ResultSkipped},
		{fixture: "declared-volume-other-name", result: ResultSkipped},
		{fixture: "declared-volume-bad-spec", result: ResultRejected, code: 400, message: []string{`spec.volumes[0].csi.volumeAttributes of volume "vault" are invalid: secrets[0]`, `secrets[0] (path "/abs")`}},
		{fixture: "subpath-mount", result: ResultRejected, code: 403, message: []string{"spec.containers[0].volumeMounts[0]", "subPath mounts never see rotated secret files"}},
		{fixture: "subpathexpr-mount", result: ResultRejected, code: 403, message: []string{"spec.initContainers[0].volumeMounts[0]", `container "init"`}},
		{fixture: "secrets-invalid-yaml", result: ResultRejected, code: 400, message: []string{`attribute "secrets" is not a valid YAML list`}},
		{fixture: "secrets-absolute-file", result: ResultRejected, code: 400, message: []string{`file name "/etc/passwd" is absolute`}},
		{fixture: "secrets-duplicate-file", result: ResultRejected, code: 400, message: []string{`file name "password" is used twice`}},
		{fixture: "attribute-invalid", result: ResultRejected, code: 400, message: []string{`"0755" sets an execute bit`, `attribute "refreshInterval"`}},
		{fixture: "annotation-unknown", result: ResultRejected, code: 400, message: []string{`metadata.annotations["phantom.dev/secret"] is not a Phantom annotation`, "phantom.dev/secrets"}},
		{fixture: "all-attributes", result: ResultMutated},
		{fixture: "already-injected", result: ResultSkipped},
		{fixture: "several-problems", result: ResultRejected, code: 400, message: []string{`names container "ghost"`, `is "relative"`, "is not a CSI volume"}},
	}
	for _, tt := range tests {
		t.Run(tt.fixture, func(t *testing.T) {
			t.Parallel()
			h, metrics := newTestHandler(t, testNamespaces)

			input := readFile(t, filepath.Join("testdata", "admission", tt.fixture+".json"))
			request := decodeTestReview(t, input).Request
			response := postReview(t, h, input)

			if got := testutil.ToFloat64(metrics.admissions.WithLabelValues(tt.result)); got != 1 {
				t.Errorf("admissions{result=%q} = %v, want 1", tt.result, got)
			}
			if response.UID != request.UID {
				t.Errorf("response UID = %q, want %q", response.UID, request.UID)
			}
			checkResponse(t, response, tt.result, tt.code, tt.message)

			got := goldenOf(t, request.Object.Raw, response)
			if tt.result == ResultMutated {
				checkIdempotent(t, request.Namespace, got.PatchedPod)
			}
			compareGolden(t, filepath.Join("testdata", "admission", tt.fixture+".golden.json"), got)
		})
	}
}

func checkResponse(t *testing.T, response *admissionv1.AdmissionResponse, result string, code int32, message []string) {
	t.Helper()
	if want := result != ResultRejected; response.Allowed != want {
		t.Fatalf("allowed = %v, want %v (result %+v)", response.Allowed, want, response.Result)
	}
	if hasPatch := len(response.Patch) > 0; hasPatch != (result == ResultMutated) {
		t.Errorf("patch present = %v for result %s", hasPatch, result)
	}
	if result == ResultMutated && (response.PatchType == nil || *response.PatchType != admissionv1.PatchTypeJSONPatch) {
		t.Errorf("patchType = %v, want JSONPatch", response.PatchType)
	}
	if result != ResultRejected {
		return
	}
	if response.Result == nil {
		t.Fatal("rejection has no status")
	}
	if response.Result.Code != code {
		t.Errorf("status code = %d, want %d", response.Result.Code, code)
	}
	for _, part := range message {
		if !strings.Contains(response.Result.Message, part) {
			t.Errorf("message %q does not contain %q", response.Result.Message, part)
		}
	}
}

// goldenOf applies the response's patch to the pod with a JSON patch
// library and returns the outcome in golden form.
func goldenOf(t *testing.T, podJSON []byte, response *admissionv1.AdmissionResponse) golden {
	t.Helper()
	g := golden{Allowed: response.Allowed}
	if response.Result != nil {
		g.Code, g.Message = response.Result.Code, response.Result.Message
	}
	if len(response.Patch) == 0 {
		return g
	}

	if err := json.Unmarshal(response.Patch, &g.Patch); err != nil {
		t.Fatalf("decode patch: %v", err)
	}
	patched := applyPatch(t, podJSON, response.Patch)
	if err := json.Unmarshal(patched, &g.PatchedPod); err != nil {
		t.Fatalf("decode patched pod: %v", err)
	}
	return g
}

func applyPatch(t testing.TB, doc, patch []byte) []byte {
	t.Helper()
	decoded, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		t.Fatalf("decode patch %s: %v", patch, err)
	}
	patched, err := decoded.Apply(doc)
	if err != nil {
		t.Fatalf("apply patch %s: %v", patch, err)
	}
	return patched
}

// checkIdempotent runs the mutator on its own output, as a reinvocation
// does, and expects nothing more to change.
func checkIdempotent(t *testing.T, namespace string, patchedPod map[string]any) {
	t.Helper()
	raw, err := json.Marshal(patchedPod)
	if err != nil {
		t.Fatal(err)
	}
	pod := &corev1.Pod{}
	if err := json.Unmarshal(raw, pod); err != nil {
		t.Fatalf("decode patched pod: %v", err)
	}
	decision, err := newTestMutator(t, testNamespaces).Mutate(context.Background(), pod, namespace)
	if err != nil {
		t.Fatal(err)
	}
	if decision.Result != ResultSkipped || len(decision.Patch) != 0 {
		t.Errorf("second mutation = %s with patch %s, want skipped with no patch", decision.Result, decision.Patch)
	}
}

func compareGolden(t *testing.T, path string, got golden) {
	t.Helper()
	if *update {
		var data bytes.Buffer
		encoder := json.NewEncoder(&data)
		encoder.SetEscapeHTML(false)
		encoder.SetIndent("", "  ")
		if err := encoder.Encode(got); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, data.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	var want golden
	if err := json.Unmarshal(readFile(t, path), &want); err != nil {
		t.Fatalf("decode %s: %v", path, err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("outcome differs from %s (-want +got); run go test -update to accept:\n%s", path, diff)
	}
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

func decodeTestReview(t testing.TB, data []byte) *admissionv1.AdmissionReview {
	t.Helper()
	review := &admissionv1.AdmissionReview{}
	if err := json.Unmarshal(data, review); err != nil {
		t.Fatalf("decode review: %v", err)
	}
	return review
}

// postReview sends a review through the HTTP handler and returns the
// response of the returned review.
func postReview(t testing.TB, h http.Handler, body []byte) *admissionv1.AdmissionResponse {
	t.Helper()
	recorder := httptest.NewRecorder()
	request := httptest.NewRequest(http.MethodPost, "/mutate", bytes.NewReader(body))
	request.Header.Set("Content-Type", "application/json")
	h.ServeHTTP(recorder, request)
	if recorder.Code != http.StatusOK {
		t.Fatalf("HTTP status = %d, body %s", recorder.Code, recorder.Body)
	}
	review := decodeTestReview(t, recorder.Body.Bytes())
	if review.APIVersion != "admission.k8s.io/v1" || review.Kind != "AdmissionReview" || review.Response == nil {
		t.Fatalf("response is not an AdmissionReview v1 with a response: %s", recorder.Body)
	}
	return review.Response
}

func TestHandlerInvalidRequests(t *testing.T) {
	t.Parallel()
	valid := readFile(t, filepath.Join("testdata", "admission", "namespace-enabled.json"))

	tests := []struct {
		name        string
		method      string
		contentType string
		body        string
		wantStatus  int
	}{
		{"get method", http.MethodGet, "application/json", string(valid), http.StatusMethodNotAllowed},
		{"text content type", http.MethodPost, "text/plain", string(valid), http.StatusUnsupportedMediaType},
		{"malformed json", http.MethodPost, "application/json", "{", http.StatusBadRequest},
		{"v1beta1 review", http.MethodPost, "application/json", `{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":{"uid":"1"}}`, http.StatusBadRequest},
		{"no request", http.MethodPost, "application/json", `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`, http.StatusBadRequest},
		{"oversized body", http.MethodPost, "application/json", `{"x":"` + strings.Repeat("a", maxReviewBytes) + `"}`, http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			h, metrics := newTestHandler(t, testNamespaces)
			recorder := httptest.NewRecorder()
			request := httptest.NewRequest(tt.method, "/mutate", strings.NewReader(tt.body))
			request.Header.Set("Content-Type", tt.contentType)

			h.ServeHTTP(recorder, request)

			if recorder.Code != tt.wantStatus {
				t.Errorf("status = %d, want %d (body %s)", recorder.Code, tt.wantStatus, recorder.Body)
			}
			if got := testutil.ToFloat64(metrics.admissions.WithLabelValues(ResultError)); got != 1 {
				t.Errorf("admissions{result=error} = %v, want 1", got)
			}
		})
	}
}

func TestHandlerNamespaceLookupFails(t *testing.T) {
	t.Parallel()
	h, metrics := newTestHandler(t, fakeNamespaces{})
	body := readFile(t, filepath.Join("testdata", "admission", "namespace-enabled.json"))

	response := postReview(t, h, body)

	if response.Allowed {
		t.Fatal("request allowed although the namespace lookup failed")
	}
	if response.Result.Code != http.StatusInternalServerError || !strings.Contains(response.Result.Message, "get labels of namespace team-a") {
		t.Errorf("status = %d %q, want 500 naming the namespace lookup", response.Result.Code, response.Result.Message)
	}
	if got := testutil.ToFloat64(metrics.admissions.WithLabelValues(ResultError)); got != 1 {
		t.Errorf("admissions{result=error} = %v, want 1", got)
	}
}

func TestHandlerUndecodablePod(t *testing.T) {
	t.Parallel()
	h, _ := newTestHandler(t, testNamespaces)
	body := `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"7","kind":{"version":"v1","kind":"Pod"},"operation":"CREATE","namespace":"team-a","object":{"spec":{"containers":"not-a-list"}}}}`

	response := postReview(t, h, []byte(body))

	if response.Allowed || response.Result.Code != http.StatusBadRequest || !strings.Contains(response.Result.Message, "decode pod") {
		t.Errorf("response = allowed %v, status %+v; want a 400 naming the pod decoding", response.Allowed, response.Result)
	}
}

func TestEscapePointer(t *testing.T) {
	t.Parallel()
	tests := map[string]string{
		"phantom.dev/injected": "phantom.dev~1injected",
		"a~b":                  "a~0b",
		"~/":                   "~0~1",
		"a/~1":                 "a~1~01",
	}
	for in, want := range tests {
		if got := escapePointer(in); got != want {
			t.Errorf("escapePointer(%q) = %q, want %q", in, got, want)
		}
	}
}
