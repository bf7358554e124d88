package chart

import (
	"strconv"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	storagev1 "k8s.io/api/storage/v1"

	"github.com/phantom-sec/phantom/pkg/reconcile"
	"github.com/phantom-sec/phantom/tests/chart/render"
)

// Label that Helm sets on every object it installs or upgrades, whatever the
// template renders.
const (
	helmManagedByLabel = "app.kubernetes.io/managed-by"
	helmManagedByValue = "Helm"
)

// reconcilerConfig returns the objects configuration that the rendered
// webhook Deployment gives the reconciler through its flags.
func reconcilerConfig(t *testing.T, deploy *appsv1.Deployment) reconcile.ObjectConfig {
	t.Helper()
	args := flagValues(t, container(t, deploy.Spec.Template.Spec).Args)

	namespace := args["namespace"]
	if namespace == "$(POD_NAMESPACE)" {
		// The pod's namespace, from the downward API.
		namespace = deploy.Namespace
	}
	expiration, err := time.ParseDuration(args["token-expiration"])
	if err != nil {
		t.Fatalf("--token-expiration %q: %v", args["token-expiration"], err)
	}
	inSecrets, err := strconv.ParseBool(args["token-in-secrets"])
	if err != nil {
		t.Fatalf("--token-in-secrets %q: %v", args["token-in-secrets"], err)
	}
	cfg := reconcile.ObjectConfig{
		WebhookConfigName: args["webhook-config-name"],
		ServiceName:       args["service-name"],
		Namespace:         namespace,
		DriverName:        args["driver-name"],
		TokenAudience:     args["token-audience"],
		TokenExpiration:   expiration,
		TokenInSecrets:    inSecrets,
	}
	if errs := cfg.Validate(); len(errs) > 0 {
		t.Fatalf("reconciler configuration from the webhook's flags is invalid: %v", errs)
	}
	return cfg
}

// labelsAfterHelm returns the labels an object has once Helm applied it.
func labelsAfterHelm(rendered map[string]string) map[string]string {
	labels := map[string]string{helmManagedByLabel: helmManagedByValue}
	for k, v := range rendered {
		if k != helmManagedByLabel {
			labels[k] = v
		}
	}
	return labels
}

// checkReconcilerLabels fails the test when the reconciler would rewrite a
// label of the installed object. Such a label flips on every upgrade, and a
// server-side `helm upgrade` fails on the field conflict with the
// reconciler's field manager.
func checkReconcilerLabels(t *testing.T, kind string, desired, rendered map[string]string) {
	t.Helper()
	installed := labelsAfterHelm(rendered)
	for k, v := range desired {
		if installed[k] != v {
			t.Errorf("%s label %s: the reconciler sets %q, Helm installs %q", kind, k, v, installed[k])
		}
	}
}

// TestChartMatchesReconciler checks that the chart installs exactly the
// MutatingWebhookConfiguration and CSIDriver that the webhook's reconciler
// restores, so that neither rewrites what the other wrote.
func TestChartMatchesReconciler(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		values    map[string]any
		namespace string
	}{
		{name: "default", values: minimalValues()},
		{name: "all", values: allValues(t)},
		{name: "kube-system release", values: minimalValues(), namespace: "kube-system"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			out, err := render.Render(render.Options{ChartDir: repoPath(t, chartPath), Namespace: tc.namespace, Values: tc.values})
			if err != nil {
				t.Fatal(err)
			}
			objects := decodeAll(t, out)
			cfg := reconcilerConfig(t, webhookDeployment(t, objects))

			rendered := oneOf[*admissionregistrationv1.MutatingWebhookConfiguration](t, objects)
			desired := reconcile.DesiredWebhookConfiguration(cfg)
			if rendered.Name != desired.Name {
				t.Errorf("MutatingWebhookConfiguration name: chart %q, reconciler %q", rendered.Name, desired.Name)
			}
			if diff := cmp.Diff(desired.Webhooks, rendered.Webhooks, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("MutatingWebhookConfiguration webhooks (-reconciler +chart):\n%s", diff)
			}
			checkReconcilerLabels(t, "MutatingWebhookConfiguration", desired.Labels, rendered.Labels)

			driver := oneOf[*storagev1.CSIDriver](t, objects)
			desiredDriver := reconcile.DesiredCSIDriver(cfg)
			if driver.Name != desiredDriver.Name {
				t.Errorf("CSIDriver name: chart %q, reconciler %q", driver.Name, desiredDriver.Name)
			}
			if diff := cmp.Diff(desiredDriver.Spec, driver.Spec); diff != "" {
				t.Errorf("CSIDriver spec (-reconciler +chart):\n%s", diff)
			}
			checkReconcilerLabels(t, "CSIDriver", desiredDriver.Labels, driver.Labels)
		})
	}
}
