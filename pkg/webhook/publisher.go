package webhook

import (
	"context"
	"encoding/json"
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
)

// PodPublisher publishes the CA certificates as the AnnotationWebhookCA
// annotation of the replica's own Pod. It needs RBAC `patch` on pods in
// Namespace.
type PodPublisher struct {
	Client    corev1client.PodsGetter
	Namespace string
	PodName   string
}

var _ CAPublisher = PodPublisher{}

// PublishCA implements CAPublisher with a JSON merge patch, which touches
// no other annotation.
func (p PodPublisher) PublishCA(ctx context.Context, pemCerts []byte) error {
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{
			"annotations": map[string]string{AnnotationWebhookCA: string(pemCerts)},
		},
	})
	if err != nil {
		return fmt.Errorf("encode pod patch: %w", err)
	}
	_, err = p.Client.Pods(p.Namespace).Patch(ctx, p.PodName, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil {
		return fmt.Errorf("annotate pod %s/%s with the webhook CA: %w", p.Namespace, p.PodName, err)
	}
	return nil
}
