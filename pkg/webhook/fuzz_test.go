package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// byteSource hands out choices from fuzz input; once the input runs out
// every choice is 0.
type byteSource struct {
	data []byte
}

func (b *byteSource) pick(n int) int {
	if len(b.data) == 0 {
		return 0
	}
	v := int(b.data[0])
	b.data = b.data[1:]
	return v % n
}

func (b *byteSource) rest() string {
	s := string(b.data)
	b.data = nil
	return s
}

var (
	fuzzNamespaces   = []string{"team-a", "plain", "kube-system", testOwnNamespace}
	fuzzInjectLabels = []string{"", InjectEnabled, InjectDisabled, "yes"}
	fuzzNames        = []string{"app", "sidecar", "init", "proxy"}
	fuzzVolumeNames  = []string{VolumeName, "data", "vault", "cache"}
	fuzzMountPaths   = []string{DefaultMountPath, "/run/secrets", DefaultMountPath + "/x", "/data", DefaultMountPath + "/", "/etc/app"}
	fuzzAttributes   = []map[string]string{nil, {"role": "payments"}, {"secrets": "- path: a/b\n  field: c\n"}, {"secrets": "- path: /bad\n"}, {"unknown": "x"}}
	fuzzAnnotations  = []struct{ key, value string }{
		{AnnotationMountPath, "/etc/app"}, {AnnotationMountPath, "relative"}, {AnnotationMountPath, "/"},
		{AnnotationContainers, "app"}, {AnnotationContainers, "app,sidecar"}, {AnnotationContainers, "ghost"}, {AnnotationContainers, " , "},
		{"phantom.dev/secrets", "- path: payments/db\n  field: password\n"}, {"phantom.dev/secrets", "- path: [x"},
		{"phantom.dev/role", "payments"}, {"phantom.dev/sizeLimit", "1Mi"}, {"phantom.dev/unknown", "1"},
		{AnnotationInjected, "true"}, {AnnotationRuntimeProtection, "audit"}, {"example.com/other", "1"},
	}
)

// fuzzPod builds a pod and its namespace from fuzz input.
func fuzzPod(data []byte) (*corev1.Pod, string) {
	b := &byteSource{data: data}
	namespace := fuzzNamespaces[b.pick(len(fuzzNamespaces))]
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{GenerateName: "fuzz-"}}

	if label := fuzzInjectLabels[b.pick(len(fuzzInjectLabels))]; label != "" {
		pod.Labels = map[string]string{LabelInject: label}
	}
	for range b.pick(4) {
		a := fuzzAnnotations[b.pick(len(fuzzAnnotations))]
		if pod.Annotations == nil {
			pod.Annotations = map[string]string{}
		}
		pod.Annotations[a.key] = a.value
	}
	for range b.pick(4) {
		name := fuzzVolumeNames[b.pick(len(fuzzVolumeNames))]
		pod.Spec.Volumes = append(pod.Spec.Volumes, fuzzVolume(b, name))
	}
	for range b.pick(3) {
		pod.Spec.InitContainers = append(pod.Spec.InitContainers, fuzzContainer(b))
	}
	for range 1 + b.pick(3) {
		pod.Spec.Containers = append(pod.Spec.Containers, fuzzContainer(b))
	}

	// The rest of the input becomes one free-form value.
	switch free := b.rest(); b.pick(1) + len(free)%4 {
	case 1:
		setAnnotation(pod, "phantom.dev/secrets", free)
	case 2:
		setAnnotation(pod, AnnotationMountPath, free)
	case 3:
		setAnnotation(pod, AnnotationContainers, free)
	}
	return pod, namespace
}

func fuzzVolume(b *byteSource, name string) corev1.Volume {
	v := corev1.Volume{Name: name}
	switch b.pick(3) {
	case 0:
		v.EmptyDir = &corev1.EmptyDirVolumeSource{}
	case 1:
		v.CSI = &corev1.CSIVolumeSource{Driver: DefaultDriverName, VolumeAttributes: fuzzAttributes[b.pick(len(fuzzAttributes))]}
	default:
		v.CSI = &corev1.CSIVolumeSource{Driver: "other.csi.example"}
	}
	return v
}

func fuzzContainer(b *byteSource) corev1.Container {
	c := corev1.Container{Name: fuzzNames[b.pick(len(fuzzNames))], Image: "app"}
	for range b.pick(4) {
		m := corev1.VolumeMount{
			Name:      fuzzVolumeNames[b.pick(len(fuzzVolumeNames))],
			MountPath: fuzzMountPaths[b.pick(len(fuzzMountPaths))],
		}
		switch b.pick(4) {
		case 1:
			m.SubPath = "file"
		case 2:
			m.SubPathExpr = "$(POD_NAME)"
		}
		c.VolumeMounts = append(c.VolumeMounts, m)
	}
	return c
}

func setAnnotation(pod *corev1.Pod, key, value string) {
	if pod.Annotations == nil {
		pod.Annotations = map[string]string{}
	}
	pod.Annotations[key] = value
}

// FuzzMutate checks, for generated pods, that a patch always applies, that
// mutating the patched pod changes nothing more, and that rejections
// carry a status code and a message.
func FuzzMutate(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{0, 1, 0, 0, 0})
	f.Add([]byte{0, 0, 2, 7, 9, 1, 4, 2, 0, 1, 0, 1, 1, 2, 0, 0, 1, 1, 0, 0})
	f.Add([]byte("\x01\x01\x03\x03\x04\x05\x01\x02\x01\x01\x00\x02\x00\x01\x02\x02\x00\x00\x00/run/secrets/phantom/../x"))
	m := newTestMutator(f, testNamespaces)

	f.Fuzz(func(t *testing.T, data []byte) {
		pod, namespace := fuzzPod(data)
		decision, err := m.Mutate(context.Background(), pod, namespace)
		if err != nil {
			t.Fatalf("Mutate: %v", err)
		}

		switch decision.Result {
		case ResultSkipped:
			if len(decision.Patch) != 0 {
				t.Fatalf("skipped pod has patch %s", decision.Patch)
			}
		case ResultRejected:
			if (decision.Code != codeInvalid && decision.Code != codeForbidden) || decision.Message == "" {
				t.Fatalf("rejection has code %d and message %q", decision.Code, decision.Message)
			}
		case ResultMutated:
			checkFuzzMutation(t, m, pod, namespace, decision.Patch)
		default:
			t.Fatalf("unknown result %q", decision.Result)
		}
	})
}

func checkFuzzMutation(t *testing.T, m *Mutator, pod *corev1.Pod, namespace string, patch []byte) {
	t.Helper()
	original, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	patched := &corev1.Pod{}
	if err := json.Unmarshal(applyPatch(t, original, patch), patched); err != nil {
		t.Fatalf("decode patched pod: %v", err)
	}

	again, err := m.Mutate(context.Background(), patched, namespace)
	if err != nil {
		t.Fatalf("second Mutate: %v", err)
	}
	if again.Result != ResultSkipped || len(again.Patch) != 0 {
		t.Fatalf("second Mutate = %s %s %q, want skipped without patch; first patch %s", again.Result, again.Patch, again.Message, patch)
	}
	// The patch adds the volume only when the pod has none of that name.
	if before, after := countVolumes(pod, VolumeName), countVolumes(patched, VolumeName); after != max(before, 1) {
		t.Fatalf("patched pod has %d volumes named %s, the pod had %d", after, VolumeName, before)
	}
	if patched.Annotations[AnnotationInjected] != "true" {
		t.Fatalf("patched pod lacks annotation %s", AnnotationInjected)
	}
}

func countVolumes(pod *corev1.Pod, name string) int {
	n := 0
	for _, v := range pod.Spec.Volumes {
		if v.Name == name {
			n++
		}
	}
	return n
}

func TestFuzzPodCoversResults(t *testing.T) {
	t.Parallel()
	// The generator must reach every result, or the fuzz test proves
	// little.
	m := newTestMutator(t, testNamespaces)
	seen := map[string]bool{}
	for i := range 4096 {
		data := []byte(fmt.Sprintf("%08x%08x", i*2654435761, i*40503))
		pod, namespace := fuzzPod(data)
		decision, err := m.Mutate(context.Background(), pod, namespace)
		if err != nil {
			t.Fatal(err)
		}
		seen[decision.Result] = true
	}
	for _, result := range []string{ResultMutated, ResultSkipped, ResultRejected} {
		if !seen[result] {
			t.Errorf("generated pods never gave result %s", result)
		}
	}
}
