package reconcile

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"
)

var testObjects = ObjectConfig{
	WebhookConfigName: "phantom-webhook",
	ServiceName:       "phantom-webhook",
	Namespace:         "phantom-system",
	DriverName:        "secrets.phantom.dev",
	TokenAudience:     "openbao",
	TokenExpiration:   10 * time.Minute,
	TokenInSecrets:    true,
}

func TestDesiredWebhookConfiguration(t *testing.T) {
	t.Parallel()
	cfg := DesiredWebhookConfiguration(testObjects)

	if cfg.Name != "phantom-webhook" || len(cfg.Webhooks) != 2 {
		t.Fatalf("configuration %s has %d webhooks, want phantom-webhook with 2", cfg.Name, len(cfg.Webhooks))
	}
	for _, hook := range cfg.Webhooks {
		want := admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{
			Namespace: "phantom-system", Name: "phantom-webhook", Path: ptr.To("/mutate"), Port: ptr.To[int32](443),
		}}
		if diff := cmp.Diff(want, hook.ClientConfig); diff != "" {
			t.Errorf("%s clientConfig (-want +got):\n%s", hook.Name, diff)
		}
		wantRules := []admissionregistrationv1.RuleWithOperations{{
			Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
			Rule: admissionregistrationv1.Rule{
				APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"},
				Scope: ptr.To(admissionregistrationv1.NamespacedScope),
			},
		}}
		if diff := cmp.Diff(wantRules, hook.Rules); diff != "" {
			t.Errorf("%s rules (-want +got):\n%s", hook.Name, diff)
		}
		checks := []struct {
			field     string
			got, want any
		}{
			{"failurePolicy", *hook.FailurePolicy, admissionregistrationv1.Fail},
			{"matchPolicy", *hook.MatchPolicy, admissionregistrationv1.Equivalent},
			{"sideEffects", *hook.SideEffects, admissionregistrationv1.SideEffectClassNone},
			{"timeoutSeconds", *hook.TimeoutSeconds, int32(5)},
			{"reinvocationPolicy", *hook.ReinvocationPolicy, admissionregistrationv1.IfNeededReinvocationPolicy},
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("%s %s = %v, want %v", hook.Name, c.field, c.got, c.want)
			}
		}
		if diff := cmp.Diff([]string{"v1"}, hook.AdmissionReviewVersions); diff != "" {
			t.Errorf("%s admissionReviewVersions (-want +got):\n%s", hook.Name, diff)
		}
	}
}

// TestWebhookSelectorsMatchOnce evaluates both webhooks' selectors as the
// API server does (namespaceSelector AND objectSelector) and checks that
// at most one webhook matches each pod.
func TestWebhookSelectorsMatchOnce(t *testing.T) {
	t.Parallel()
	cfg := DesiredWebhookConfiguration(testObjects)

	namespaces := map[string]map[string]string{
		"labeled":        {"kubernetes.io/metadata.name": "labeled", "phantom.dev/inject": "enabled"},
		"plain":          {"kubernetes.io/metadata.name": "plain"},
		"opted-out":      {"kubernetes.io/metadata.name": "opted-out", "phantom.dev/inject": "disabled"},
		"kube-system":    {"kubernetes.io/metadata.name": "kube-system", "phantom.dev/inject": "enabled"},
		"phantom-system": {"kubernetes.io/metadata.name": "phantom-system", "phantom.dev/inject": "enabled"},
	}
	pods := map[string]map[string]string{
		"unlabeled": {"app": "web"},
		"enabled":   {"phantom.dev/inject": "enabled"},
		"disabled":  {"phantom.dev/inject": "disabled"},
	}
	want := map[[2]string]string{
		{"labeled", "unlabeled"}:   NamespaceWebhookName,
		{"labeled", "enabled"}:     NamespaceWebhookName,
		{"plain", "enabled"}:       PodWebhookName,
		{"opted-out", "enabled"}:   PodWebhookName,
		{"kube-system", "enabled"}: "",
	}

	for nsName, nsLabels := range namespaces {
		for podName, podLabels := range pods {
			var matched []string
			for _, hook := range cfg.Webhooks {
				if selects(t, hook.NamespaceSelector, nsLabels) && selects(t, hook.ObjectSelector, podLabels) {
					matched = append(matched, hook.Name)
				}
			}
			if len(matched) > 1 {
				t.Errorf("namespace %s, pod %s: matched %v, want at most one webhook", nsName, podName, matched)
			}
			got := ""
			if len(matched) == 1 {
				got = matched[0]
			}
			if w := want[[2]string{nsName, podName}]; got != w {
				t.Errorf("namespace %s, pod %s: matched %q, want %q", nsName, podName, got, w)
			}
		}
	}
}

func selects(t *testing.T, selector *metav1.LabelSelector, set map[string]string) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(selector)
	if err != nil {
		t.Fatalf("selector %v: %v", selector, err)
	}
	return s.Matches(labels.Set(set))
}

func TestDesiredCSIDriver(t *testing.T) {
	t.Parallel()
	for _, inSecrets := range []bool{true, false} {
		t.Run(fmt.Sprintf("token in secrets %t", inSecrets), func(t *testing.T) {
			t.Parallel()
			want := storagev1.CSIDriverSpec{
				AttachRequired:               ptr.To(false),
				PodInfoOnMount:               ptr.To(true),
				VolumeLifecycleModes:         []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecycleEphemeral},
				StorageCapacity:              ptr.To(false),
				FSGroupPolicy:                ptr.To(storagev1.FileFSGroupPolicy),
				TokenRequests:                []storagev1.TokenRequest{{Audience: "openbao", ExpirationSeconds: ptr.To[int64](600)}},
				RequiresRepublish:            ptr.To(true),
				ServiceAccountTokenInSecrets: ptr.To(inSecrets),
			}
			cfg := testObjects
			cfg.TokenInSecrets = inSecrets
			got := DesiredCSIDriver(cfg)
			if got.Name != "secrets.phantom.dev" {
				t.Errorf("name = %q, want secrets.phantom.dev", got.Name)
			}
			if diff := cmp.Diff(want, got.Spec); diff != "" {
				t.Errorf("spec (-want +got):\n%s", diff)
			}
		})
	}
}

// TestCSIDriverChangesTokenInSecrets checks the comparison of
// serviceAccountTokenInSecrets, where an unset field means false.
func TestCSIDriverChangesTokenInSecrets(t *testing.T) {
	t.Parallel()
	const field = "spec.serviceAccountTokenInSecrets"
	tests := []struct {
		name        string
		desired     bool
		live        *bool
		wantChanged bool
	}{
		{name: "true kept", desired: true, live: ptr.To(true)},
		{name: "true flipped", desired: true, live: ptr.To(false), wantChanged: true},
		{name: "true removed", desired: true, live: nil, wantChanged: true},
		{name: "false kept", desired: false, live: ptr.To(false)},
		{name: "false flipped", desired: false, live: ptr.To(true), wantChanged: true},
		{name: "false dropped by an old API server", desired: false, live: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			cfg := testObjects
			cfg.TokenInSecrets = tt.desired
			desired := DesiredCSIDriver(cfg).Spec
			live := *desired.DeepCopy()
			live.ServiceAccountTokenInSecrets = tt.live

			changes, immutable := csiDriverChanges(desired, live)
			var want []string
			if tt.wantChanged {
				want = []string{field}
			}
			if diff := cmp.Diff(want, changes); diff != "" {
				t.Errorf("changes (-want +got):\n%s", diff)
			}
			if immutable {
				t.Errorf("immutable = true, want false: %s can be updated", field)
			}

			applyCSIDriverSpec(&live, desired)
			if changes, _ := csiDriverChanges(desired, live); len(changes) != 0 {
				t.Errorf("changes after applyCSIDriverSpec = %v, want none", changes)
			}
		})
	}
}

func TestObjectConfigValidate(t *testing.T) {
	t.Parallel()
	errs := ObjectConfig{TokenExpiration: time.Minute}.Validate()
	if len(errs) != 6 {
		t.Errorf("Validate() of an empty config returned %d problems, want 6: %v", len(errs), errs)
	}
	if errs := testObjects.Validate(); len(errs) != 0 {
		t.Errorf("Validate() = %v, want none", errs)
	}
}
