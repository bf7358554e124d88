package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/phantom-sec/phantom/tests/e2e/setup"
)

// restoreTimeout bounds how long the webhook's reconciler may take to
// recreate its deleted configuration.
const restoreTimeout = 30 * time.Second

// testWebhookRestored deletes the MutatingWebhookConfiguration and waits
// for the webhook's reconciler to recreate it as installed, with a CA
// bundle, then checks that injection works again.
func (s *suite) testWebhookRestored(t *testing.T, alpha *tenant) {
	ctx := context.Background()
	configs := s.kube.AdmissionregistrationV1().MutatingWebhookConfigurations()
	before, err := configs.Get(ctx, setup.WebhookName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get MutatingWebhookConfiguration %s: %v", setup.WebhookName, err)
	}
	if err := configs.Delete(ctx, setup.WebhookName, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete MutatingWebhookConfiguration %s: %v", setup.WebhookName, err)
	}
	deleted := time.Now()

	var restored *admissionregistrationv1.MutatingWebhookConfiguration
	err = poll(ctx, restoreTimeout, func() (bool, error) {
		restored, err = configs.Get(ctx, setup.WebhookName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil && restored.UID != before.UID && hasCABundles(restored), err
	})
	if err != nil {
		t.Fatalf("MutatingWebhookConfiguration %s not restored with a CA bundle within %s: %v", setup.WebhookName, restoreTimeout, err)
	}
	t.Logf("reconciler restored the configuration %s after deletion", time.Since(deleted).Round(100*time.Millisecond))

	if len(restored.Webhooks) != len(before.Webhooks) {
		t.Errorf("restored configuration has %d webhooks, the installed one had %d", len(restored.Webhooks), len(before.Webhooks))
	}
	for i := range min(len(restored.Webhooks), len(before.Webhooks)) {
		got, want := restored.Webhooks[i], before.Webhooks[i]
		if got.Name != want.Name || !equality.Semantic.DeepEqual(got.ClientConfig.Service, want.ClientConfig.Service) || got.ClientConfig.URL != nil {
			t.Errorf("restored webhooks[%d] is %s calling %+v, want %s calling %+v as installed", i, got.Name, got.ClientConfig.Service, want.Name, want.ClientConfig.Service)
		}
	}

	created := s.createPod(t, basePod(alpha, "after-restore"))
	checkInjected(t, created)
	running := s.waitRunning(t, created)
	s.checkFile(t, running, "config/password", alpha.secrets[alpha.kvPath("config")]["password"])
}

// testCSIDriverRestored deletes the CSIDriver and waits for the webhook's
// reconciler to recreate it with the spec that was installed, then checks
// that a pod still gets its secrets.
func (s *suite) testCSIDriverRestored(t *testing.T, beta *tenant) {
	ctx := context.Background()
	drivers := s.kube.StorageV1().CSIDrivers()
	before, err := drivers.Get(ctx, setup.DriverName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get CSIDriver %s: %v", setup.DriverName, err)
	}
	if err := drivers.Delete(ctx, setup.DriverName, metav1.DeleteOptions{}); err != nil {
		t.Fatalf("delete CSIDriver %s: %v", setup.DriverName, err)
	}
	deleted := time.Now()
	t.Cleanup(func() {
		if t.Failed() {
			// Leave the release as installed for the scenarios after this one.
			s.reinstall(t, true)
		}
	})

	var restored *storagev1.CSIDriver
	err = poll(ctx, restoreTimeout, func() (bool, error) {
		restored, err = drivers.Get(ctx, setup.DriverName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil && restored.UID != before.UID, err
	})
	if err != nil {
		t.Fatalf("CSIDriver %s not restored within %s: %v", setup.DriverName, restoreTimeout, err)
	}
	t.Logf("reconciler restored the CSIDriver %s after deletion", time.Since(deleted).Round(100*time.Millisecond))
	if diff := cmp.Diff(before.Spec, restored.Spec); diff != "" {
		t.Errorf("restored CSIDriver spec differs from the installed one (-installed +restored):\n%s", diff)
	}

	pod := basePod(beta, "after-driver-restore")
	declareVolume(pod, map[string]string{"secrets": secretsList([3]string{beta.kvPath("api"), "token", "token"})})
	running := s.waitRunning(t, s.createPod(t, pod))
	s.checkFile(t, running, "token", beta.secrets[beta.kvPath("api")]["token"])
}

// reinstall installs the chart again, as an upgrade, with
// csiDriver.serviceAccountTokenInSecrets set to tokenInSecrets.
func (s *suite) reinstall(t *testing.T, tokenInSecrets bool) {
	t.Helper()
	opts, err := setup.ChartOptionsFor(s.cluster, s.bao, tokenInSecrets)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := setup.Install(context.Background(), s.cluster, opts, t.Logf); err != nil {
		t.Fatalf("upgrade with serviceAccountTokenInSecrets=%t: %v", tokenInSecrets, err)
	}
}

func hasCABundles(c *admissionregistrationv1.MutatingWebhookConfiguration) bool {
	if len(c.Webhooks) == 0 {
		return false
	}
	for _, hook := range c.Webhooks {
		if len(hook.ClientConfig.CABundle) == 0 {
			return false
		}
	}
	return true
}

// testTokenInVolumeContext upgrades the release with
// csiDriver.serviceAccountTokenInSecrets=false, so kubelet passes the
// pod's token in the volume context instead of the request's secrets, and
// checks that a pod still gets its secrets. It upgrades back afterwards.
// The scenarios before it ran with the token in the secrets.
func (s *suite) testTokenInVolumeContext(t *testing.T, beta *tenant) {
	ctx := context.Background()
	checkDriver := func(want bool) {
		t.Helper()
		driver, err := s.kube.StorageV1().CSIDrivers().Get(ctx, setup.DriverName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		got := driver.Spec.ServiceAccountTokenInSecrets != nil && *driver.Spec.ServiceAccountTokenInSecrets
		if got != want {
			t.Fatalf("CSIDriver %s serviceAccountTokenInSecrets = %t, want %t", setup.DriverName, got, want)
		}
	}

	// NOTE: the suite checks the CSIDriver field and the pod's files. It
	// cannot tell which field of NodePublishVolume carried the token,
	// because neither kubelet nor phantom-node reports it.
	s.reinstall(t, false)
	t.Cleanup(func() {
		s.reinstall(t, true)
		checkDriver(true)
	})
	checkDriver(false)

	pod := basePod(beta, "token-in-context")
	declareVolume(pod, map[string]string{"secrets": secretsList([3]string{beta.kvPath("api"), "token", "token"})})
	running := s.waitRunning(t, s.createPod(t, pod))
	s.checkFile(t, running, "token", beta.secrets[beta.kvPath("api")]["token"])
	// The webhook's reconciler must keep the upgraded value, not restore
	// another one.
	checkDriver(false)
}
