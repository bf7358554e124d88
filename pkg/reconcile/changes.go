package reconcile

import (
	"bytes"
	"fmt"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/utils/ptr"
)

// webhookChanges lists the fields of live that differ from desired, apart
// from the caBundle, as paths such as `webhooks[0].failurePolicy`.
func webhookChanges(desired, live []admissionregistrationv1.MutatingWebhook) []string {
	if len(desired) != len(live) {
		return []string{fmt.Sprintf("webhooks (%d entries, want %d)", len(live), len(desired))}
	}

	var changes []string
	for i := range desired {
		d, l := desired[i], live[i]
		fields := []struct {
			name         string
			desired, got any
		}{
			{"name", d.Name, l.Name},
			{"clientConfig.service", d.ClientConfig.Service, l.ClientConfig.Service},
			{"clientConfig.url", d.ClientConfig.URL, l.ClientConfig.URL},
			{"rules", d.Rules, l.Rules},
			{"failurePolicy", d.FailurePolicy, l.FailurePolicy},
			{"matchPolicy", d.MatchPolicy, l.MatchPolicy},
			{"namespaceSelector", d.NamespaceSelector, l.NamespaceSelector},
			{"objectSelector", d.ObjectSelector, l.ObjectSelector},
			{"sideEffects", d.SideEffects, l.SideEffects},
			{"timeoutSeconds", d.TimeoutSeconds, l.TimeoutSeconds},
			{"admissionReviewVersions", d.AdmissionReviewVersions, l.AdmissionReviewVersions},
			{"reinvocationPolicy", d.ReinvocationPolicy, l.ReinvocationPolicy},
			{"matchConditions", d.MatchConditions, l.MatchConditions},
		}
		for _, f := range fields {
			if !equality.Semantic.DeepEqual(f.desired, f.got) {
				changes = append(changes, fmt.Sprintf("webhooks[%d].%s", i, f.name))
			}
		}
	}
	return changes
}

// caBundleChanges lists the webhooks whose caBundle is not bundle.
func caBundleChanges(live []admissionregistrationv1.MutatingWebhook, bundle []byte) []string {
	var changes []string
	for i, hook := range live {
		if !bytes.Equal(hook.ClientConfig.CABundle, bundle) {
			changes = append(changes, fmt.Sprintf("webhooks[%d].clientConfig.caBundle", i))
		}
	}
	return changes
}

// csiDriverChanges lists the fields of live that differ from desired.
// immutable is true when one of them cannot be updated, so the object
// must be deleted and created again.
func csiDriverChanges(desired, live storagev1.CSIDriverSpec) (changes []string, immutable bool) {
	fields := []struct {
		name         string
		desired, got any
		immutable    bool
	}{
		{"spec.attachRequired", desired.AttachRequired, live.AttachRequired, true},
		{"spec.volumeLifecycleModes", desired.VolumeLifecycleModes, live.VolumeLifecycleModes, true},
		{"spec.podInfoOnMount", desired.PodInfoOnMount, live.PodInfoOnMount, false},
		{"spec.storageCapacity", desired.StorageCapacity, live.StorageCapacity, false},
		{"spec.fsGroupPolicy", desired.FSGroupPolicy, live.FSGroupPolicy, false},
		{"spec.tokenRequests", desired.TokenRequests, live.TokenRequests, false},
		{"spec.requiresRepublish", desired.RequiresRepublish, live.RequiresRepublish, false},
		// An unset field means false to kubelet, and an API server older
		// than Kubernetes 1.35 drops the field, so nil equals false here.
		// NOTE: such an API server drops true too, so TokenInSecrets true
		// there is reported as a restore at every comparison.
		{"spec.serviceAccountTokenInSecrets", ptr.Deref(desired.ServiceAccountTokenInSecrets, false), ptr.Deref(live.ServiceAccountTokenInSecrets, false), false},
	}
	for _, f := range fields {
		if !equality.Semantic.DeepEqual(f.desired, f.got) {
			changes = append(changes, f.name)
			immutable = immutable || f.immutable
		}
	}
	return changes, immutable
}

// applyCSIDriverSpec copies the fields csiDriverChanges compares from
// desired to live and leaves the others, which the API server may default.
func applyCSIDriverSpec(live *storagev1.CSIDriverSpec, desired storagev1.CSIDriverSpec) {
	live.AttachRequired = desired.AttachRequired
	live.VolumeLifecycleModes = desired.VolumeLifecycleModes
	live.PodInfoOnMount = desired.PodInfoOnMount
	live.StorageCapacity = desired.StorageCapacity
	live.FSGroupPolicy = desired.FSGroupPolicy
	live.TokenRequests = desired.TokenRequests
	live.RequiresRepublish = desired.RequiresRepublish
	live.ServiceAccountTokenInSecrets = desired.ServiceAccountTokenInSecrets
}
