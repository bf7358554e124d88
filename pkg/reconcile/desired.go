// Package reconcile keeps the cluster objects Phantom depends on as they
// should be: the MutatingWebhookConfiguration that routes pod creation to
// the webhook, with a caBundle that trusts every webhook replica, and the
// CSIDriver object of the node plugin. Only the leader of a Lease writes.
// It restores either object within seconds when someone deletes or alters
// it, and records the restore as an Event, a log line and a metric.
package reconcile

import (
	"fmt"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	storagev1 "k8s.io/api/storage/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/phantom-sec/phantom/pkg/webhook"
)

// Names of the two webhooks in the configuration. The API server ANDs a
// webhook's namespaceSelector and objectSelector, so "namespace labeled OR
// pod labeled" takes two webhooks whose selectors never both match.
const (
	NamespaceWebhookName = "namespace.pods.secrets.phantom.dev"
	PodWebhookName       = "pod.pods.secrets.phantom.dev"
)

const (
	webhookPath           = "/mutate"
	webhookPort           = 443
	webhookTimeoutSeconds = 5
	namespaceNameLabel    = "kubernetes.io/metadata.name"
	systemNamespace       = "kube-system"

	labelName   = "app.kubernetes.io/name"
	labelPartOf = "app.kubernetes.io/part-of"
)

// ObjectConfig names the objects the reconciler keeps.
type ObjectConfig struct {
	// WebhookConfigName is the name of the MutatingWebhookConfiguration.
	WebhookConfigName string
	// ServiceName and Namespace locate the webhook Service. Namespace is
	// also Phantom's own namespace, which the webhooks exclude.
	ServiceName string
	Namespace   string
	// DriverName is the name of the CSIDriver object.
	DriverName string
	// TokenAudience and TokenExpiration set the service-account token
	// kubelet passes to the node plugin at each publish.
	TokenAudience   string
	TokenExpiration time.Duration
	// TokenInSecrets makes kubelet pass that token in the NodePublishVolume
	// secrets field instead of the volume context. Only Kubernetes 1.35 and
	// later know the CSIDriver field, and older API servers drop it.
	TokenInSecrets bool
}

// Validate returns every problem of the configuration.
func (c ObjectConfig) Validate() []error {
	var errs []error
	for _, f := range []struct{ name, value string }{
		{"WebhookConfigName", c.WebhookConfigName}, {"ServiceName", c.ServiceName},
		{"Namespace", c.Namespace}, {"DriverName", c.DriverName}, {"TokenAudience", c.TokenAudience},
	} {
		if f.value == "" {
			errs = append(errs, fmt.Errorf("%s is empty", f.name))
		}
	}
	if c.TokenExpiration < 10*time.Minute {
		errs = append(errs, fmt.Errorf("TokenExpiration %s is less than the 10m minimum of the TokenRequest API", c.TokenExpiration))
	}
	return errs
}

// DesiredWebhookConfiguration returns the MutatingWebhookConfiguration
// Phantom needs, with an empty caBundle: the reconciler fills it in from
// the CAs that the replicas publish.
//
// Every field the API server would default is set, so the live object
// equals this one unless someone altered it.
func DesiredWebhookConfiguration(cfg ObjectConfig) *admissionregistrationv1.MutatingWebhookConfiguration {
	excluded := metav1.LabelSelectorRequirement{
		Key:      namespaceNameLabel,
		Operator: metav1.LabelSelectorOpNotIn,
		Values:   excludedNamespaces(cfg.Namespace),
	}
	inject := func(op metav1.LabelSelectorOperator, value string) metav1.LabelSelectorRequirement {
		return metav1.LabelSelectorRequirement{Key: webhook.LabelInject, Operator: op, Values: []string{value}}
	}

	namespaceHook := baseWebhook(cfg, NamespaceWebhookName)
	namespaceHook.NamespaceSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		inject(metav1.LabelSelectorOpIn, webhook.InjectEnabled), excluded,
	}}
	namespaceHook.ObjectSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		inject(metav1.LabelSelectorOpNotIn, webhook.InjectDisabled),
	}}

	podHook := baseWebhook(cfg, PodWebhookName)
	podHook.NamespaceSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		inject(metav1.LabelSelectorOpNotIn, webhook.InjectEnabled), excluded,
	}}
	podHook.ObjectSelector = &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
		inject(metav1.LabelSelectorOpIn, webhook.InjectEnabled),
	}}

	return &admissionregistrationv1.MutatingWebhookConfiguration{
		TypeMeta:   metav1.TypeMeta{APIVersion: "admissionregistration.k8s.io/v1", Kind: "MutatingWebhookConfiguration"},
		ObjectMeta: metav1.ObjectMeta{Name: cfg.WebhookConfigName, Labels: managedLabels()},
		Webhooks:   []admissionregistrationv1.MutatingWebhook{namespaceHook, podHook},
	}
}

func baseWebhook(cfg ObjectConfig, name string) admissionregistrationv1.MutatingWebhook {
	return admissionregistrationv1.MutatingWebhook{
		Name: name,
		ClientConfig: admissionregistrationv1.WebhookClientConfig{
			Service: &admissionregistrationv1.ServiceReference{
				Namespace: cfg.Namespace,
				Name:      cfg.ServiceName,
				Path:      ptr.To(webhookPath),
				Port:      ptr.To[int32](webhookPort),
			},
		},
		Rules: []admissionregistrationv1.RuleWithOperations{{
			Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
			Rule: admissionregistrationv1.Rule{
				APIGroups:   []string{""},
				APIVersions: []string{"v1"},
				Resources:   []string{"pods"},
				Scope:       ptr.To(admissionregistrationv1.NamespacedScope),
			},
		}},
		FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
		MatchPolicy:             ptr.To(admissionregistrationv1.Equivalent),
		SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
		TimeoutSeconds:          ptr.To[int32](webhookTimeoutSeconds),
		AdmissionReviewVersions: []string{"v1"},
		ReinvocationPolicy:      ptr.To(admissionregistrationv1.IfNeededReinvocationPolicy),
	}
}

// excludedNamespaces returns kube-system and Phantom's own namespace:
// injecting there could block the pods the webhook itself needs.
func excludedNamespaces(own string) []string {
	if own == systemNamespace {
		return []string{systemNamespace}
	}
	return []string{systemNamespace, own}
}

// DesiredCSIDriver returns the CSIDriver object of the node plugin. It
// allows ephemeral inline volumes only. kubelet passes pod info and a
// service-account token for TokenAudience at every publish, and republishes
// periodically, which drives rotation. serviceAccountTokenInSecrets is set
// from TokenInSecrets, also when that is false, as the chart renders it.
// The driver advertises VOLUME_MOUNT_GROUP, so kubelet hands it the fsGroup
// instead of changing the ownership of every file.
func DesiredCSIDriver(cfg ObjectConfig) *storagev1.CSIDriver {
	return &storagev1.CSIDriver{
		TypeMeta:   metav1.TypeMeta{APIVersion: "storage.k8s.io/v1", Kind: "CSIDriver"},
		ObjectMeta: metav1.ObjectMeta{Name: cfg.DriverName, Labels: managedLabels()},
		Spec: storagev1.CSIDriverSpec{
			AttachRequired:       ptr.To(false),
			PodInfoOnMount:       ptr.To(true),
			VolumeLifecycleModes: []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecycleEphemeral},
			StorageCapacity:      ptr.To(false),
			FSGroupPolicy:        ptr.To(storagev1.FileFSGroupPolicy),
			TokenRequests: []storagev1.TokenRequest{{
				Audience:          cfg.TokenAudience,
				ExpirationSeconds: ptr.To(int64(cfg.TokenExpiration / time.Second)),
			}},
			RequiresRepublish:            ptr.To(true),
			ServiceAccountTokenInSecrets: ptr.To(cfg.TokenInSecrets),
		},
	}
}

// managedLabels are the labels the reconciler adds to both objects. It
// leaves app.kubernetes.io/managed-by alone, because Helm owns that label
// when the chart installs the objects.
func managedLabels() map[string]string {
	return map[string]string{labelName: "phantom", labelPartOf: "phantom"}
}
