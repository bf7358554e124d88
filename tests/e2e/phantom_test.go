package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/phantom-sec/phantom/tests/e2e/setup"
)

// TestPhantom runs every scenario against the installed Phantom, then the
// sovereignty scan, which must come last because it looks for the values
// of all scenarios.
func TestPhantom(t *testing.T) {
	s := newSuite(t)
	started := time.Now()
	// alpha's namespace is labeled, so the webhook adds the volume; beta's
	// pods declare the volume themselves.
	alpha := s.newTenant(t, "alpha", true)
	beta := s.newTenant(t, "beta", false)

	t.Run("chart passes server-side dry-run", s.testChartDryRun)
	t.Run("pods", func(t *testing.T) {
		scenarios := []struct {
			name string
			test func(*testing.T)
		}{
			{"webhook injects volume", func(t *testing.T) { s.testInjection(t, alpha) }},
			{"default layout without secrets list", func(t *testing.T) { s.testDefaultLayout(t, alpha) }},
			{"declared volume without webhook", func(t *testing.T) { s.testDeclaredVolume(t, beta) }},
			{"fsGroup owns files", func(t *testing.T) { s.testOwnership(t, beta) }},
			{"rotated secret reaches running pod", func(t *testing.T) { s.testRotation(t, alpha) }},
			{"dynamic lease revoked on delete", func(t *testing.T) { s.testDynamicLease(t, alpha) }},
			{"other tenant's path denied", func(t *testing.T) { s.testOtherTenantPath(t, alpha, beta) }},
			{"other tenant's role denied", func(t *testing.T) { s.testOtherTenantRole(t, alpha, beta) }},
		}
		for _, sc := range scenarios {
			t.Run(sc.name, func(t *testing.T) {
				t.Parallel()
				began := time.Now()
				sc.test(t)
				t.Logf("took %s", time.Since(began).Round(100*time.Millisecond))
			})
		}
	})
	// These change cluster-wide objects, so they run alone.
	t.Run("webhook configuration restored", func(t *testing.T) { s.testWebhookRestored(t, alpha) })
	t.Run("CSIDriver restored", func(t *testing.T) { s.testCSIDriverRestored(t, beta) })
	t.Run("token in volume context", func(t *testing.T) { s.testTokenInVolumeContext(t, beta) })
	t.Logf("scenarios took %s", time.Since(started).Round(time.Second))

	t.Run("sovereignty", func(t *testing.T) { s.testSovereignty(t, beta) })
}

// testChartDryRun sends the chart's objects, as rendered for any cluster
// and as patched and installed here, through every admission step of the
// API server without storing them.
func (s *suite) testChartDryRun(t *testing.T) {
	ctx := context.Background()
	opts, err := setup.ChartOptionsFor(s.cluster, s.bao, true)
	if err != nil {
		t.Fatal(err)
	}
	asIs, err := setup.RenderChartAsIs(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := setup.Apply(ctx, s.cluster, asIs, true); err != nil {
		t.Errorf("chart as rendered: %v", err)
	}
	installed, err := setup.RenderChart(opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := setup.Apply(ctx, s.cluster, installed, true); err != nil {
		t.Errorf("chart as installed: %v", err)
	}
	t.Logf("%d objects passed server-side dry-run as rendered and as installed; patches for this cluster:", len(installed.Objects))
	for _, p := range installed.Patches {
		t.Logf("  %s", p)
	}
}

// secretsList renders the secrets attribute: one item per line of
// path, field and file.
func secretsList(items ...[3]string) string {
	var b strings.Builder
	for _, item := range items {
		b.WriteString("- path: " + item[0] + "\n  field: " + item[1] + "\n  file: " + item[2] + "\n")
	}
	return b.String()
}

// testInjection creates a pod with no volume in a labeled namespace. It
// checks that the webhook added the volume to the container and the init
// container and that the files hold OpenBao's values on a tmpfs. Then it
// checks that deleting the pod removes the mount.
func (s *suite) testInjection(t *testing.T, alpha *tenant) {
	pod := basePod(alpha, "injected")
	pod.Annotations = map[string]string{"phantom.dev/secrets": secretsList(
		[3]string{alpha.kvPath("config"), "password", "db-password"},
		[3]string{alpha.kvPath("api"), "token", "api/token"},
	)}
	pod.Spec.InitContainers = []corev1.Container{{
		Name:            "init",
		Image:           busyboxImage,
		ImagePullPolicy: corev1.PullNever,
		Command:         []string{"/bin/sh", "-c", "test -s " + mountPath + "/db-password"},
	}}
	created := s.createPod(t, pod)
	checkInjected(t, created)

	running := s.waitRunning(t, created)
	s.checkFile(t, running, "db-password", alpha.secrets[alpha.kvPath("config")]["password"])
	s.checkFile(t, running, "api/token", alpha.secrets[alpha.kvPath("api")]["token"])
	s.checkHostMount(t, running)

	s.deletePod(t, running)
	s.checkUnmounted(t, running)
}

// checkInjected fails unless the webhook added the Phantom volume and
// mounted it read-only in every container and init container.
func checkInjected(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	if pod.Annotations["phantom.dev/injected"] == "" {
		t.Errorf("pod %s/%s has no phantom.dev/injected annotation; annotations: %v", pod.Namespace, pod.Name, pod.Annotations)
	}
	var volume *corev1.Volume
	for i := range pod.Spec.Volumes {
		if pod.Spec.Volumes[i].Name == volumeName {
			volume = &pod.Spec.Volumes[i]
		}
	}
	if volume == nil || volume.CSI == nil || volume.CSI.Driver != setup.DriverName {
		t.Fatalf("pod %s/%s has no CSI volume %s of driver %s: volumes %+v", pod.Namespace, pod.Name, volumeName, setup.DriverName, pod.Spec.Volumes)
	}
	containers := append(append([]corev1.Container(nil), pod.Spec.InitContainers...), pod.Spec.Containers...)
	for _, c := range containers {
		found := false
		for _, m := range c.VolumeMounts {
			if m.Name == volumeName && m.MountPath == mountPath && m.ReadOnly {
				found = true
			}
		}
		if !found {
			t.Errorf("container %s has no read-only mount of %s at %s: mounts %+v", c.Name, volumeName, mountPath, c.VolumeMounts)
		}
	}
}

// checkHostMount fails unless the pod's volume is a tmpfs on the host
// mounted noexec, nosuid and nodev.
func (s *suite) checkHostMount(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	target := s.volumeTarget(pod)
	m, err := mountAt(target)
	if err != nil {
		t.Fatalf("volume of pod %s/%s at %s: %v", pod.Namespace, pod.Name, target, err)
	}
	if m.fsType != "tmpfs" {
		t.Errorf("volume at %s is %s, want tmpfs", target, m.fsType)
	}
	for _, option := range []string{"noexec", "nosuid", "nodev"} {
		if !m.has(option) {
			t.Errorf("volume at %s lacks mount option %s: %v", target, option, m.options)
		}
	}
}

// checkUnmounted fails while a mount or the directory of the deleted
// pod's volume remains on the host.
func (s *suite) checkUnmounted(t *testing.T, pod *corev1.Pod) {
	t.Helper()
	target := s.volumeTarget(pod)
	err := poll(context.Background(), 30*time.Second, func() (bool, error) {
		_, err := mountAt(target)
		if errors.Is(err, errNoMount) {
			return true, nil
		}
		return false, err
	})
	if err != nil {
		t.Errorf("volume of deleted pod %s/%s still mounted at %s: %v", pod.Namespace, pod.Name, target, err)
	}
	if _, err := os.Stat(target); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("target directory %s of deleted pod remains (stat: %v)", target, err)
	}
}

// testDefaultLayout checks that a volume without a secrets list gets every
// secret under <namespace>/<service account>/, one directory per secret
// and one file per field.
func (s *suite) testDefaultLayout(t *testing.T, alpha *tenant) {
	created := s.createPod(t, basePod(alpha, "default-layout"))
	checkInjected(t, created)
	running := s.waitRunning(t, created)

	s.checkFile(t, running, "config/username", alpha.secrets[alpha.kvPath("config")]["username"])
	s.checkFile(t, running, "config/password", alpha.secrets[alpha.kvPath("config")]["password"])
	s.checkFile(t, running, "api/token", alpha.secrets[alpha.kvPath("api")]["token"])
}

// testDeclaredVolume checks a pod that declares the Phantom volume itself
// in a namespace the webhook does not watch.
func (s *suite) testDeclaredVolume(t *testing.T, beta *tenant) {
	pod := basePod(beta, "declared")
	declareVolume(pod, map[string]string{
		"secrets": "- path: " + beta.kvPath("config") + "\n  format: json\n  file: config.json\n",
	})
	created := s.createPod(t, pod)
	if _, ok := created.Annotations["phantom.dev/injected"]; ok {
		t.Errorf("webhook changed pod %s/%s of an unlabeled namespace", created.Namespace, created.Name)
	}
	running := s.waitRunning(t, created)

	var got map[string]string
	if err := json.Unmarshal([]byte(s.readFile(t, running, "config.json")), &got); err != nil {
		t.Fatalf("config.json is not a JSON object of strings: %v", err)
	}
	want := beta.secrets[beta.kvPath("config")]
	for field, value := range want {
		if got[field] != value {
			t.Errorf("config.json field %s differs from the value in OpenBao (%d bytes, want %d)", field, len(got[field]), len(value))
		}
	}
	if len(got) != len(want) {
		t.Errorf("config.json has %d fields, want %d", len(got), len(want))
	}
	s.checkHostMount(t, running)

	s.deletePod(t, running)
	s.checkUnmounted(t, running)
}

// testOwnership checks that files belong to the pod's fsGroup with the
// requested modes, so a non-root container reads them through its group
// and cannot read a file whose mode excludes the group.
func (s *suite) testOwnership(t *testing.T, beta *tenant) {
	pod := basePod(beta, "fsgroup")
	pod.Spec.SecurityContext = &corev1.PodSecurityContext{
		RunAsUser:  ptr.To[int64](1000),
		RunAsGroup: ptr.To[int64](1000),
		FSGroup:    ptr.To[int64](3000),
	}
	declareVolume(pod, map[string]string{
		"secrets": secretsList([3]string{beta.kvPath("config"), "password", "password"}) +
			"- path: " + beta.kvPath("api") + "\n  field: token\n  file: owner-only\n  mode: \"0400\"\n",
	})
	running := s.waitRunning(t, s.createPod(t, pod))

	tests := []struct {
		path string
		want string
	}{
		{mountPath, "0:3000"},
		{mountPath + "/password", "0:3000 440"},
		{mountPath + "/owner-only", "0:3000 400"},
	}
	for _, tt := range tests {
		format := "%u:%g %a"
		if tt.path == mountPath {
			format = "%u:%g"
		}
		out, err := s.exec(running, "stat", "-L", "-c", format, tt.path)
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.TrimSpace(out); got != tt.want {
			t.Errorf("stat %s = %q, want %q", tt.path, got, tt.want)
		}
	}

	s.checkFile(t, running, "password", beta.secrets[beta.kvPath("config")]["password"])
	if _, err := s.exec(running, "cat", mountPath+"/owner-only"); err == nil || !strings.Contains(err.Error(), "Permission denied") {
		t.Errorf("uid 1000 read a file of mode 0400 owned by root: err = %v, want Permission denied", err)
	}
}

// testRotation writes a new version of a secret while a pod runs and
// waits for the pod's file to change. kubelet republishes the volume every
// syncFrequency (E2E_KUBELET_SYNC_FREQUENCY, 10s in hack/e2e.sh), and the
// volume sets the shortest refresh interval.
func (s *suite) testRotation(t *testing.T, alpha *tenant) {
	path := alpha.kvPath("rotating")
	first := s.newSecret("alpha rotating version 1")
	s.putKV(t, path, map[string]string{"value": first})

	pod := basePod(alpha, "rotation")
	pod.Annotations = map[string]string{
		"phantom.dev/secrets":         secretsList([3]string{path, "value", "value"}),
		"phantom.dev/refreshInterval": setup.RefreshInterval,
	}
	running := s.waitRunning(t, s.createPod(t, pod))
	s.checkFile(t, running, "value", first)

	second := s.newSecret("alpha rotating version 2")
	s.putKV(t, path, map[string]string{"value": second})
	written := time.Now()
	err := poll(context.Background(), 90*time.Second, func() (bool, error) {
		got, err := s.exec(running, "cat", mountPath+"/value")
		return err == nil && got == second, nil
	})
	if err != nil {
		t.Fatalf("running pod did not see the new version of %s: %v", path, err)
	}
	t.Logf("new version reached the running pod %s after the write", time.Since(written).Round(100*time.Millisecond))
}

// testDynamicLease reads database credentials, then deletes the pod and
// checks at the server that their lease was revoked.
func (s *suite) testDynamicLease(t *testing.T, alpha *tenant) {
	if !s.bao.TestServer {
		t.Skip("needs the baoserver: its database engine issues credentials without a database, and /e2e/status counts leases")
	}
	ctx := context.Background()
	pod := basePod(alpha, "dynamic")
	pod.Annotations = map[string]string{"phantom.dev/secrets": "- path: " + setup.DatabaseMount + "/creds/" + alpha.namespace +
		"\n  type: dynamic\n  format: json\n  file: db.json\n"}
	running := s.waitRunning(t, s.createPod(t, pod))

	var creds struct {
		Username string `json:"username"`
		Password string `json:"password"`
	}
	if err := json.Unmarshal([]byte(s.readFile(t, running, "db.json")), &creds); err != nil {
		t.Fatalf("db.json is not the credentials' JSON: %v", err)
	}
	if creds.Username == "" || creds.Password == "" {
		t.Fatalf("db.json lacks username or password")
	}
	s.addSecret("alpha database password", creds.Password)

	status, err := s.bao.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if status.DatabaseUsers < 1 || status.ActiveLeases < 1 {
		t.Errorf("while the pod runs: %d database users and %d leases, want at least 1 each", status.DatabaseUsers, status.ActiveLeases)
	}

	s.deletePod(t, running)
	err = poll(ctx, 30*time.Second, func() (bool, error) {
		status, err = s.bao.Status(ctx)
		return err == nil && status.DatabaseUsers == 0 && status.ActiveLeases == 0, err
	})
	if err != nil {
		t.Errorf("after the pod was deleted: %d database users and %d leases remain, want 0: %v", status.DatabaseUsers, status.ActiveLeases, err)
	}
	s.checkUnmounted(t, running)
}

// testOtherTenantPath declares, in beta's namespace, a volume that names
// alpha's secret. OpenBao denies the read, the pod does not start, and
// kubelet records an event that names the path and beta's role.
func (s *suite) testOtherTenantPath(t *testing.T, alpha, beta *tenant) {
	pod := basePod(beta, "steal-path")
	declareVolume(pod, map[string]string{"secrets": secretsList([3]string{alpha.kvPath("config"), "password", "stolen"})})
	created := s.createPod(t, pod)
	s.checkMountFails(t, created, alpha.kvPath("config"), beta.role)
}

// testOtherTenantRole names alpha's OpenBao role in a volume of beta's
// namespace. The role's bound claims reject beta's token.
func (s *suite) testOtherTenantRole(t *testing.T, alpha, beta *tenant) {
	pod := basePod(beta, "steal-role")
	declareVolume(pod, map[string]string{"role": alpha.role})
	created := s.createPod(t, pod)
	s.checkMountFails(t, created, alpha.role)
}

// checkMountFails waits for a FailedMount event of the pod whose message
// contains every one of want, then checks that the pod did not start and
// nothing is mounted for it.
func (s *suite) checkMountFails(t *testing.T, pod *corev1.Pod, want ...string) {
	t.Helper()
	var message string
	err := poll(context.Background(), podTimeout, func() (bool, error) {
		events, err := s.podEvents(pod)
		if err != nil {
			return false, err
		}
		for _, e := range events {
			if e.Reason == "FailedMount" && containsAll(e.Message, want) {
				message = e.Message
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("no FailedMount event naming %q for pod %s/%s: %v\n%s", want, pod.Namespace, pod.Name, err, s.describeEvents(pod))
	}
	t.Logf("event: %s", message)

	current, err := s.kube.CoreV1().Pods(pod.Namespace).Get(context.Background(), pod.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if current.Status.Phase != corev1.PodPending {
		t.Errorf("pod %s/%s is %s, want Pending", pod.Namespace, pod.Name, current.Status.Phase)
	}
	if _, err := mountAt(s.volumeTarget(current)); !errors.Is(err, errNoMount) {
		t.Errorf("volume of the denied pod is mounted at %s (err %v)", s.volumeTarget(current), err)
	}
}

func containsAll(s string, parts []string) bool {
	for _, p := range parts {
		if !strings.Contains(s, p) {
			return false
		}
	}
	return true
}
