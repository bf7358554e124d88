package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"

	"github.com/phantom-sec/phantom/tests/e2e/cluster"
	"github.com/phantom-sec/phantom/tests/e2e/setup"
	"github.com/phantom-sec/phantom/tests/e2e/sovereignty"
)

// EnvRun, set to 1, runs the suite. Without it the suite skips, so that
// `go test ./...` on a machine where a cluster happens to run does not
// install anything into it.
const EnvRun = "PHANTOM_E2E"

// Names and paths shared by the scenarios.
const (
	serviceAccount = "app"
	volumeName     = "phantom-secrets"
	mountPath      = "/run/secrets/phantom"
	busyboxImage   = "phantom/busybox:e2e"
	// sleeper runs until SIGTERM, which it obeys at once, so deleting a
	// pod takes a second instead of the grace period.
	sleeper = "trap 'exit 0' TERM; while true; do sleep 1; done"

	podTimeout   = 2 * time.Minute
	pollInterval = 500 * time.Millisecond
)

// suite is the state of one run.
type suite struct {
	cluster *cluster.Cluster
	kube    kubernetes.Interface
	bao     *setup.OpenBao
	// runID makes namespace names unique, so a rerun against the same
	// cluster does not meet namespaces still terminating.
	runID string

	mu sync.Mutex
	// secrets are the values the run wrote to OpenBao or saw in a pod;
	// the sovereignty scan looks for each of them.
	secrets []sovereignty.Value
	// podLogs are the logs of deleted pods, captured before deletion.
	podLogs map[string][]byte
}

// newSuite returns the suite's state, or skips the test when the suite is
// not enabled or no cluster runs.
func newSuite(t *testing.T) *suite {
	t.Helper()
	if os.Getenv(EnvRun) != "1" {
		t.Skipf("end-to-end suite skipped: set %s=1 to run it against a cluster with Phantom installed; hack/e2e.sh starts both", EnvRun)
	}
	c := cluster.Require(t)
	kube, err := setup.Clientset(c)
	if err != nil {
		t.Fatal(err)
	}
	bao, err := setup.LoadOpenBao(setup.OpenBaoDir(c))
	if err != nil {
		t.Fatal(err)
	}
	return &suite{
		cluster: c,
		kube:    kube,
		bao:     bao,
		runID:   strings.ToLower(rand.Text()[:5]),
		podLogs: map[string][]byte{},
	}
}

// newSecret returns a random value, unique to this run, and adds it to the
// values the sovereignty scan looks for. label names it in reports.
func (s *suite) newSecret(label string) string {
	value := "phc-" + rand.Text()
	s.addSecret(label, value)
	return value
}

// addSecret adds a value that the run saw, such as a credential that
// OpenBao generated, to the values the sovereignty scan looks for.
func (s *suite) addSecret(label, value string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.secrets = append(s.secrets, sovereignty.Value{Label: label, Data: []byte(value)})
}

// tenant is a namespace with service account app and an OpenBao role
// that reads the namespace's own secrets only.
type tenant struct {
	name      string
	namespace string
	role      string
	// secrets maps an OpenBao KV path to its fields and values.
	secrets map[string]map[string]string
}

// newTenant creates namespace e2e-<name>-<run id>, labeled for injection
// when inject is true, its service account, its OpenBao role and two KV
// secrets with fresh values: config (username, password) and api (token).
func (s *suite) newTenant(t *testing.T, name string, inject bool) *tenant {
	t.Helper()
	ctx := context.Background()
	tn := &tenant{name: name, namespace: "e2e-" + name + "-" + s.runID}
	tn.role = tn.namespace + "-" + serviceAccount

	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: tn.namespace}}
	if inject {
		ns.Labels = map[string]string{"phantom.dev/inject": "enabled"}
	}
	if _, err := s.kube.CoreV1().Namespaces().Create(ctx, ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace %s: %v", tn.namespace, err)
	}
	t.Cleanup(func() {
		err := s.kube.CoreV1().Namespaces().Delete(context.Background(), tn.namespace, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("delete namespace %s: %v", tn.namespace, err)
		}
	})
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: serviceAccount, Namespace: tn.namespace}}
	if _, err := s.kube.CoreV1().ServiceAccounts(tn.namespace).Create(ctx, sa, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create service account %s/%s: %v", tn.namespace, serviceAccount, err)
	}

	if err := setup.WriteTenant(ctx, s.bao, tn.namespace, serviceAccount); err != nil {
		t.Fatal(err)
	}
	tn.secrets = map[string]map[string]string{
		tn.kvPath("config"): {
			"username": s.newSecret(name + " config username"),
			"password": s.newSecret(name + " config password"),
		},
		tn.kvPath("api"): {
			"token": s.newSecret(name + " api token"),
		},
	}
	for path, fields := range tn.secrets {
		s.putKV(t, path, fields)
	}
	return tn
}

// kvPath returns the path of secret name below the tenant's default
// prefix <namespace>/<service account>.
func (tn *tenant) kvPath(name string) string {
	return tn.namespace + "/" + serviceAccount + "/" + name
}

func (s *suite) putKV(t *testing.T, path string, fields map[string]string) {
	t.Helper()
	data := map[string]any{}
	for k, v := range fields {
		data[k] = v
	}
	if err := setup.PutKV(context.Background(), s.bao, path, data); err != nil {
		t.Fatal(err)
	}
}

// basePod returns a pod of the tenant that runs until deleted. The
// cluster's pods use the host network, and images are never pulled.
func basePod(tn *tenant, name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: tn.namespace},
		Spec: corev1.PodSpec{
			ServiceAccountName:            serviceAccount,
			HostNetwork:                   true,
			DNSPolicy:                     corev1.DNSDefault,
			RestartPolicy:                 corev1.RestartPolicyNever,
			TerminationGracePeriodSeconds: ptr.To[int64](2),
			Containers: []corev1.Container{{
				Name:            "app",
				Image:           busyboxImage,
				ImagePullPolicy: corev1.PullNever,
				Command:         []string{"/bin/sh", "-c", sleeper},
			}},
		},
	}
}

// declareVolume adds the Phantom volume to pod as a user without the
// webhook writes it, mounted read-only in every container.
func declareVolume(pod *corev1.Pod, attributes map[string]string) {
	pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{
		Name: volumeName,
		VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
			Driver:           setup.DriverName,
			ReadOnly:         ptr.To(true),
			VolumeAttributes: attributes,
		}},
	})
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		c.VolumeMounts = append(c.VolumeMounts, corev1.VolumeMount{Name: volumeName, MountPath: mountPath, ReadOnly: true})
	}
}

// createPod creates pod and deletes it when the test ends, capturing its
// logs first for the sovereignty scan.
func (s *suite) createPod(t *testing.T, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	created, err := s.kube.CoreV1().Pods(pod.Namespace).Create(context.Background(), pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create pod %s/%s: %v", pod.Namespace, pod.Name, err)
	}
	t.Cleanup(func() { s.deletePod(t, created) })
	return created
}

// deletePod captures the pod's logs, deletes it and waits until the API
// server no longer has it. kubelet removes the pod object only after it
// has torn down the pod's volumes.
func (s *suite) deletePod(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	ctx := context.Background()
	key := pod.Namespace + "/" + pod.Name
	if logs, err := s.cluster.Kubectl(ctx, nil, "-n", pod.Namespace, "logs", pod.Name, "--all-containers", "--ignore-errors"); err == nil {
		s.mu.Lock()
		s.podLogs[key] = logs
		s.mu.Unlock()
	}

	err := s.kube.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{})
	if apierrors.IsNotFound(err) {
		return
	}
	if err != nil {
		t.Errorf("delete pod %s: %v", key, err)
		return
	}
	err = poll(ctx, podTimeout, func() (bool, error) {
		_, err := s.kube.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		return apierrors.IsNotFound(err), nil
	})
	if err != nil {
		t.Errorf("pod %s still exists after delete: %v", key, err)
	}
}

// waitRunning waits until every container of the pod is ready and returns
// the pod. On timeout it fails with the pod's phase and events.
func (s *suite) waitRunning(t *testing.T, pod *corev1.Pod) *corev1.Pod {
	t.Helper()
	ctx := context.Background()
	var current *corev1.Pod
	err := poll(ctx, podTimeout, func() (bool, error) {
		var err error
		current, err = s.kube.CoreV1().Pods(pod.Namespace).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if current.Status.Phase == corev1.PodFailed || current.Status.Phase == corev1.PodSucceeded {
			return false, fmt.Errorf("pod ended in phase %s", current.Status.Phase)
		}
		return podReady(current), nil
	})
	if err != nil {
		t.Fatalf("pod %s/%s not running: %v\n%s", pod.Namespace, pod.Name, err, s.describeEvents(pod))
	}
	return current
}

func podReady(pod *corev1.Pod) bool {
	for _, c := range pod.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// describeEvents returns the pod's phase and events, for failure messages.
func (s *suite) describeEvents(pod *corev1.Pod) string {
	events, err := s.podEvents(pod)
	if err != nil {
		return fmt.Sprintf("events: %v", err)
	}
	var b strings.Builder
	b.WriteString("events:")
	for _, e := range events {
		fmt.Fprintf(&b, "\n  %s %s: %s", e.Type, e.Reason, e.Message)
	}
	return b.String()
}

func (s *suite) podEvents(pod *corev1.Pod) ([]corev1.Event, error) {
	selector := fields.Set{"involvedObject.kind": "Pod", "involvedObject.name": pod.Name}.AsSelector().String()
	list, err := s.kube.CoreV1().Events(pod.Namespace).List(context.Background(), metav1.ListOptions{FieldSelector: selector})
	if err != nil {
		return nil, fmt.Errorf("list events of pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	return list.Items, nil
}

// exec runs command in the pod's container app and returns its standard
// output. The output may hold secret values: callers compare it and never
// log it.
func (s *suite) exec(pod *corev1.Pod, command ...string) (string, error) {
	args := append([]string{"exec", "-n", pod.Namespace, pod.Name, "-c", "app", "--"}, command...)
	cmd := exec.Command(s.cluster.BinDir+"/kubectl", append([]string{"--kubeconfig", s.cluster.Kubeconfig}, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("kubectl exec %s/%s %s: %w: %s", pod.Namespace, pod.Name, strings.Join(command, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

// readFile returns a file of the pod's Phantom volume.
func (s *suite) readFile(t *testing.T, pod *corev1.Pod, name string) string {
	t.Helper()
	out, err := s.exec(pod, "cat", mountPath+"/"+name)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// checkFile fails unless the pod's file name holds want. The message gives
// lengths only, never a value.
func (s *suite) checkFile(t *testing.T, pod *corev1.Pod, name, want string) {
	t.Helper()
	if got := s.readFile(t, pod, name); got != want {
		t.Errorf("pod %s/%s file %s: content differs from the value in OpenBao (%d bytes, want %d)", pod.Namespace, pod.Name, name, len(got), len(want))
	}
}

// poll calls check every pollInterval until it returns true or an error,
// or until timeout.
func poll(ctx context.Context, timeout time.Duration, check func() (bool, error)) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
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
			return fmt.Errorf("condition not met after %s", timeout)
		case <-time.After(pollInterval):
		}
	}
}

// errNoMount means no mount is at the path.
var errNoMount = errors.New("not mounted")
