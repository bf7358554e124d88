package protect

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"

	"github.com/phantom-sec/phantom/pkg/monitor"
)

// NewCoreClient returns a REST client for the core/v1 API group only. It
// registers only core/v1 types, where client-go's typed clientset
// registers every API group at start-up and costs the daemon megabytes
// of memory.
func NewCoreClient(cfg *rest.Config) (rest.Interface, error) {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		return nil, fmt.Errorf("register core/v1 types: %w", err)
	}
	c := rest.CopyConfig(cfg)
	c.APIPath = "/api"
	c.GroupVersion = &corev1.SchemeGroupVersion
	c.NegotiatedSerializer = serializer.NewCodecFactory(scheme).WithoutConversion()
	if c.UserAgent == "" {
		c.UserAgent = rest.DefaultKubernetesUserAgent()
	}
	return rest.RESTClientFor(c)
}

// KubeModes reads the mode label of namespaces from the API server.
type KubeModes struct {
	Client rest.Interface
}

// NamespaceMode returns the namespace's label value, or "" without one.
// A label with another value is an error, so a typo never silently means
// audit.
func (k KubeModes) NamespaceMode(ctx context.Context, namespace string) (monitor.Mode, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()

	ns := &corev1.Namespace{}
	err := k.Client.Get().Resource("namespaces").Name(namespace).Do(ctx).Into(ns)
	if err != nil {
		return "", fmt.Errorf("get namespace %s: %w", namespace, err)
	}
	value, ok := ns.Labels[LabelMode]
	if !ok {
		return "", nil
	}
	mode, err := ParseMode(value)
	if err != nil {
		return "", fmt.Errorf("namespace %s label %s: %w", namespace, LabelMode, err)
	}
	return mode, nil
}

// KubeEvents records monitor events as Warning Events on the target pod.
type KubeEvents struct {
	Client rest.Interface
	// Node is the reporting instance, the node name.
	Node   string
	Logger *slog.Logger
}

var _ monitor.EventRecorder = KubeEvents{}

// PodEvent creates the Event. Failures are logged: the audit log line and
// the metric are already recorded by the monitor.
func (k KubeEvents) PodEvent(pod monitor.PodRef, reason, message string) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	now := metav1.NewTime(time.Now())
	event := &corev1.Event{
		ObjectMeta: metav1.ObjectMeta{GenerateName: pod.Name + ".phantom.", Namespace: pod.Namespace},
		InvolvedObject: corev1.ObjectReference{
			Kind: "Pod", APIVersion: "v1", Namespace: pod.Namespace, Name: pod.Name, UID: types.UID(pod.UID),
		},
		Reason:              reason,
		Message:             message,
		Type:                corev1.EventTypeWarning,
		FirstTimestamp:      now,
		LastTimestamp:       now,
		Count:               1,
		Source:              corev1.EventSource{Component: "phantom-node", Host: k.Node},
		ReportingController: "secrets.phantom.dev/phantom-node",
		ReportingInstance:   k.Node,
	}
	err := k.Client.Post().Namespace(pod.Namespace).Resource("events").Body(event).Do(ctx).Error()
	if err != nil && !apierrors.IsAlreadyExists(err) && k.Logger != nil {
		k.Logger.Warn("failed to record a runtime-protection event on the pod",
			"namespace", pod.Namespace, "pod", pod.Name, "reason", reason, "error", err.Error())
	}
}
