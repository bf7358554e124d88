package webhook

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	corev1listers "k8s.io/client-go/listers/core/v1"
)

// ListerNamespaces returns namespace labels from an informer's lister and
// falls back to the API server for a namespace the informer has not seen
// yet, which happens when a pod is created right after its namespace.
type ListerNamespaces struct {
	Lister corev1listers.NamespaceLister
	Client corev1client.NamespacesGetter
}

var _ NamespaceLabeler = ListerNamespaces{}

// NamespaceLabels returns the labels of the namespace name.
func (n ListerNamespaces) NamespaceLabels(ctx context.Context, name string) (map[string]string, error) {
	ns, err := n.Lister.Get(name)
	if err == nil {
		return ns.Labels, nil
	}
	if !apierrors.IsNotFound(err) || n.Client == nil {
		return nil, fmt.Errorf("look up namespace %s: %w", name, err)
	}

	ns, err = n.Client.Namespaces().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get namespace %s: %w", name, err)
	}
	return ns.Labels, nil
}
