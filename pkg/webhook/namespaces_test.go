package webhook

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

func TestListerNamespaces(t *testing.T) {
	t.Parallel()
	indexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	if err := indexer.Add(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "cached", Labels: map[string]string{LabelInject: InjectEnabled}}}); err != nil {
		t.Fatal(err)
	}
	client := fake.NewClientset(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "fresh", Labels: map[string]string{"team": "b"}}})
	namespaces := ListerNamespaces{Lister: corev1listers.NewNamespaceLister(indexer), Client: client.CoreV1()}

	tests := []struct {
		name    string
		want    map[string]string
		wantErr bool
	}{
		{name: "cached", want: map[string]string{LabelInject: InjectEnabled}},
		{name: "fresh", want: map[string]string{"team": "b"}},
		{name: "missing", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := namespaces.NamespaceLabels(context.Background(), tt.name)
			if (err != nil) != tt.wantErr {
				t.Fatalf("NamespaceLabels(%q) error = %v, want error %v", tt.name, err, tt.wantErr)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("labels (-want +got):\n%s", diff)
			}
		})
	}
}
