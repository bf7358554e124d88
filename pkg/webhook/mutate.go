// Package webhook is Phantom's mutating admission webhook. It adds the
// Phantom CSI volume to pods that opt in through the `phantom.dev/inject`
// label. It validates their Phantom volume specs with the parser the node
// plugin uses. It serves HTTPS with an in-memory certificate and publishes
// the certificate's CA on the replica's own Pod.
package webhook

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/phantom-sec/phantom/pkg/spec"
)

// Labels and annotations the webhook reads or writes on pods.
const (
	// LabelInject on a namespace or a pod opts in (`enabled`); on a pod,
	// `disabled` opts out of a namespace-wide injection.
	LabelInject    = "phantom.dev/inject"
	InjectEnabled  = "enabled"
	InjectDisabled = "disabled"

	// AnnotationMountPath changes where containers see the volume.
	AnnotationMountPath = "phantom.dev/mount-path"
	// AnnotationContainers lists, comma-separated, the containers that get
	// the mount. Without it every container and init container gets it.
	AnnotationContainers = "phantom.dev/containers"
	// AnnotationRuntimeProtection is read by the node plugin's monitor, not
	// copied into the volume.
	AnnotationRuntimeProtection = "phantom.dev/runtime-protection"
	// AnnotationInjected marks a pod the webhook changed.
	AnnotationInjected = "phantom.dev/injected"
	// AnnotationWebhookCA is set on webhook replica pods: the PEM CA
	// certificates the replica's serving certificates chain to.
	AnnotationWebhookCA = "phantom.dev/webhook-ca"
)

const (
	// VolumeName is the name of the volume the webhook adds.
	VolumeName = "phantom-secrets"
	// DefaultMountPath is the mount path of the volume in containers
	// unless AnnotationMountPath sets another.
	DefaultMountPath = "/run/secrets/phantom"
	// DefaultDriverName is the CSI driver of the Phantom node plugin.
	DefaultDriverName = "secrets.phantom.dev"

	systemNamespace = "kube-system"
)

// Results of an admission, the values of the `result` metric label.
const (
	ResultMutated  = "mutated"
	ResultSkipped  = "skipped"
	ResultRejected = "rejected"
	ResultError    = "error"
)

// Status codes of a rejection: the pod's Phantom settings are malformed
// (400), or the pod as written cannot take the Phantom volume (403).
const (
	codeInvalid   = 400
	codeForbidden = 403
)

// webhookAnnotations are `phantom.dev/*` pod annotations that configure the
// webhook or other Phantom components and are not volume attributes.
var webhookAnnotations = map[string]bool{
	LabelInject:                 true,
	AnnotationMountPath:         true,
	AnnotationContainers:        true,
	AnnotationRuntimeProtection: true,
	AnnotationInjected:          true,
	AnnotationWebhookCA:         true,
}

// attributeKeys are the volume attributes a pod may set through
// `phantom.dev/<key>` annotations.
var attributeKeys = []string{
	spec.AttrSecrets, spec.AttrRole, spec.AttrKVMount,
	spec.AttrFileMode, spec.AttrSizeLimit, spec.AttrRefreshInterval,
}

// NamespaceLabeler returns the labels of a namespace. The handler uses it so
// that it selects pods correctly even when someone alters the selectors of
// the webhook configuration.
type NamespaceLabeler interface {
	NamespaceLabels(ctx context.Context, name string) (map[string]string, error)
}

// MutatorConfig configures a Mutator.
type MutatorConfig struct {
	// DriverName is the CSI driver of the added volume.
	DriverName string
	// OwnNamespace is Phantom's namespace. Mutate skips pods there, so the
	// webhook cannot block the creation of its own replicas.
	OwnNamespace string
	// Namespaces returns namespace labels.
	Namespaces NamespaceLabeler
}

// Mutator decides whether a pod gets the Phantom volume and computes the
// JSON patch that adds it. It is safe for concurrent use.
type Mutator struct {
	cfg MutatorConfig
}

// Decision is the outcome of Mutate.
type Decision struct {
	// Result is one of ResultMutated, ResultSkipped or ResultRejected.
	Result string
	// Patch is the RFC 6902 JSON patch; empty unless Result is
	// ResultMutated.
	Patch []byte
	// Code and Message explain a rejection to the user.
	Code    int32
	Message string
	// Reason is a short explanation of a skip, for the debug log.
	Reason string
}

// NewMutator returns a Mutator.
func NewMutator(cfg MutatorConfig) (*Mutator, error) {
	switch {
	case cfg.DriverName == "":
		return nil, errors.New("new mutator: DriverName is empty")
	case cfg.Namespaces == nil:
		return nil, errors.New("new mutator: Namespaces is nil")
	}
	return &Mutator{cfg: cfg}, nil
}

// Mutate decides what to do with a pod created in namespace. An error
// means that the decision could not be made, because the namespace lookup
// failed. The caller then rejects the request: letting the pod through
// without its secrets is what failurePolicy Fail exists to prevent.
func (m *Mutator) Mutate(ctx context.Context, pod *corev1.Pod, namespace string) (Decision, error) {
	skipReason, prob, err := m.selected(ctx, pod, namespace)
	switch {
	case err != nil:
		return Decision{}, err
	case prob != nil:
		return rejectProblems([]problem{*prob}), nil
	case skipReason != "":
		return Decision{Result: ResultSkipped, Reason: skipReason}, nil
	}

	plan, problems := m.plan(pod)
	if len(problems) > 0 {
		return rejectProblems(problems), nil
	}
	if plan.empty() {
		return Decision{Result: ResultSkipped, Reason: plan.skipReason}, nil
	}

	patch, err := json.Marshal(plan.operations(pod))
	if err != nil {
		return Decision{}, fmt.Errorf("encode patch: %w", err)
	}
	return Decision{Result: ResultMutated, Patch: patch}, nil
}

// selected reports whether the pod opted in. A pod that did not returns
// the reason to skip it; a pod whose label value is invalid returns a
// problem.
func (m *Mutator) selected(ctx context.Context, pod *corev1.Pod, namespace string) (string, *problem, error) {
	if namespace == systemNamespace || namespace == m.cfg.OwnNamespace {
		return "namespace " + namespace + " is excluded", nil, nil
	}

	switch value, ok := pod.Labels[LabelInject]; {
	case value == InjectDisabled:
		return "pod label " + LabelInject + "=" + InjectDisabled, nil, nil
	case value == InjectEnabled:
		return "", nil, nil
	case ok:
		return "", &problem{codeInvalid, fmt.Sprintf("metadata.labels[%q] is %q: use %q or %q",
			LabelInject, value, InjectEnabled, InjectDisabled)}, nil
	}

	labels, err := m.cfg.Namespaces.NamespaceLabels(ctx, namespace)
	if err != nil {
		return "", nil, fmt.Errorf("get labels of namespace %s: %w", namespace, err)
	}
	if labels[LabelInject] != InjectEnabled {
		return "neither the pod nor namespace " + namespace + " has " + LabelInject + "=" + InjectEnabled, nil, nil
	}
	return "", nil, nil
}

// problem is one reason to reject a pod.
type problem struct {
	code    int32
	message string
}

func rejectProblems(problems []problem) Decision {
	code := int32(codeForbidden)
	messages := make([]string, 0, len(problems))
	for _, p := range problems {
		if p.code == codeInvalid {
			code = codeInvalid
		}
		messages = append(messages, p.message)
	}
	return reject(code, strings.Join(messages, "; "))
}

func reject(code int32, message string) Decision {
	return Decision{Result: ResultRejected, Code: code, Message: "phantom: " + message}
}

// plan lists the volume and the mounts the webhook adds to one pod.
type plan struct {
	driver     string
	mountPath  string
	addVolume  *corev1.Volume
	initMounts []int // indexes of init containers that get the mount
	mounts     []int // indexes of containers that get the mount
	skipReason string
}

func (p *plan) empty() bool {
	return p.addVolume == nil && len(p.initMounts) == 0 && len(p.mounts) == 0
}

// plan checks the pod and works out the volume and the mounts to add. It
// collects every problem so the user can fix them in one round.
func (m *Mutator) plan(pod *corev1.Pod) (*plan, []problem) {
	p := &plan{driver: m.cfg.DriverName}
	var problems []problem

	mountPath, prob := mountPathOf(pod)
	if prob != nil {
		problems = append(problems, *prob)
	}
	p.mountPath = mountPath

	targets, probs := targetContainers(pod)
	problems = append(problems, probs...)

	declared, userManaged, probs := m.checkVolumes(pod)
	problems = append(problems, probs...)
	problems = append(problems, m.checkSubPaths(pod)...)

	if userManaged != "" && !declared {
		p.skipReason = "pod declares its own Phantom volume " + userManaged
		return p, problems
	}
	if !declared {
		volume, probs := m.volumeFromAnnotations(pod)
		problems = append(problems, probs...)
		p.addVolume = volume
	}
	if len(problems) > 0 {
		return p, problems
	}

	p.initMounts, probs = missingMounts(pod.Spec.InitContainers, "spec.initContainers", targets, mountPath)
	problems = append(problems, probs...)
	p.mounts, probs = missingMounts(pod.Spec.Containers, "spec.containers", targets, mountPath)
	problems = append(problems, probs...)
	if p.empty() {
		p.skipReason = "pod already has the Phantom volume and its mounts"
	}
	return p, problems
}

// mountPathOf returns the mount path of the pod's annotation, or the
// default.
func mountPathOf(pod *corev1.Pod) (string, *problem) {
	value, ok := pod.Annotations[AnnotationMountPath]
	if !ok {
		return DefaultMountPath, nil
	}
	if !path.IsAbs(value) || path.Clean(value) != value || value == "/" || strings.Contains(value, ":") {
		return DefaultMountPath, &problem{codeInvalid, fmt.Sprintf(
			"metadata.annotations[%q] is %q: use an absolute, clean path other than \"/\", such as %q",
			AnnotationMountPath, value, DefaultMountPath)}
	}
	return value, nil
}

// targetContainers returns the names of the containers listed in
// AnnotationContainers, or nil when every container gets the mount.
func targetContainers(pod *corev1.Pod) (map[string]bool, []problem) {
	value, ok := pod.Annotations[AnnotationContainers]
	if !ok {
		return nil, nil
	}

	known := map[string]bool{}
	var names []string
	for _, c := range pod.Spec.InitContainers {
		known[c.Name] = true
		names = append(names, c.Name)
	}
	for _, c := range pod.Spec.Containers {
		known[c.Name] = true
		names = append(names, c.Name)
	}

	targets := map[string]bool{}
	var problems []problem
	for _, name := range strings.Split(value, ",") {
		name = strings.TrimSpace(name)
		switch {
		case name == "":
			continue
		case !known[name]:
			problems = append(problems, problem{codeInvalid, fmt.Sprintf(
				"metadata.annotations[%q] names container %q, which the pod does not have: list only names of spec.containers or spec.initContainers (%s)",
				AnnotationContainers, name, strings.Join(names, ", "))})
		default:
			targets[name] = true
		}
	}
	if len(targets) == 0 && len(problems) == 0 {
		problems = append(problems, problem{codeInvalid, fmt.Sprintf(
			"metadata.annotations[%q] lists no container: name at least one container, or remove the annotation to mount the volume in every container",
			AnnotationContainers)})
	}
	return targets, problems
}

// checkVolumes validates the pod's existing volumes. declared is true when
// a CSI volume named VolumeName with our driver exists. userManaged names
// another volume of our driver, which means the pod manages Phantom volumes
// itself.
func (m *Mutator) checkVolumes(pod *corev1.Pod) (declared bool, userManaged string, problems []problem) {
	for i, v := range pod.Spec.Volumes {
		field := fmt.Sprintf("spec.volumes[%d]", i)
		ours := v.CSI != nil && v.CSI.Driver == m.cfg.DriverName

		if v.Name == VolumeName && !ours {
			problems = append(problems, problem{codeForbidden, fmt.Sprintf(
				"%s %q is %s, but Phantom adds a CSI volume of that name with driver %q: rename your volume, or set the pod label %s=%s",
				field, v.Name, describeVolume(v), m.cfg.DriverName, LabelInject, InjectDisabled)})
			continue
		}
		if !ours {
			continue
		}

		if _, err := spec.Parse(v.CSI.VolumeAttributes); err != nil {
			problems = append(problems, problem{codeInvalid, fmt.Sprintf(
				"%s.csi.volumeAttributes of volume %q are invalid: %s", field, v.Name, specProblems(err))})
		}
		if v.Name == VolumeName {
			declared = true
		} else if userManaged == "" {
			userManaged = fmt.Sprintf("%q", v.Name)
		}
	}
	return declared, userManaged, problems
}

func describeVolume(v corev1.Volume) string {
	if v.CSI != nil {
		return fmt.Sprintf("a CSI volume of driver %q", v.CSI.Driver)
	}
	return "not a CSI volume"
}

// checkSubPaths rejects subPath mounts of any Phantom volume. kubelet binds
// a subPath once, so the mount keeps the file of the start and misses every
// rotated secret.
func (m *Mutator) checkSubPaths(pod *corev1.Pod) []problem {
	phantom := map[string]bool{VolumeName: true}
	for _, v := range pod.Spec.Volumes {
		if v.CSI != nil && v.CSI.Driver == m.cfg.DriverName {
			phantom[v.Name] = true
		} else if v.Name == VolumeName {
			delete(phantom, VolumeName)
		}
	}

	var problems []problem
	check := func(field string, containers []corev1.Container) {
		for i, c := range containers {
			for j, vm := range c.VolumeMounts {
				if !phantom[vm.Name] || (vm.SubPath == "" && vm.SubPathExpr == "") {
					continue
				}
				problems = append(problems, problem{codeForbidden, fmt.Sprintf(
					"%s[%d].volumeMounts[%d] (container %q) mounts the Phantom volume %q with a subPath: subPath mounts never see rotated secret files, so mount the whole volume and read the file by its path",
					field, i, j, c.Name, vm.Name)})
			}
		}
	}
	check("spec.initContainers", pod.Spec.InitContainers)
	check("spec.containers", pod.Spec.Containers)
	return problems
}

// volumeFromAnnotations builds the Phantom volume from the pod's
// `phantom.dev/*` annotations and validates its attributes with spec.Parse,
// as the node plugin does at publish.
func (m *Mutator) volumeFromAnnotations(pod *corev1.Pod) (*corev1.Volume, []problem) {
	attrs := map[string]string{}
	var problems []problem
	for key, value := range pod.Annotations {
		name, ok := strings.CutPrefix(key, spec.AnnotationPrefix)
		if !ok || webhookAnnotations[key] {
			continue
		}
		if !slices.Contains(attributeKeys, name) {
			problems = append(problems, problem{codeInvalid, fmt.Sprintf(
				"metadata.annotations[%q] is not a Phantom annotation: use one of %s",
				key, strings.Join(knownAnnotations(), ", "))})
			continue
		}
		attrs[name] = value
	}
	if len(problems) > 0 {
		slices.SortFunc(problems, func(a, b problem) int { return strings.Compare(a.message, b.message) })
		return nil, problems
	}

	if _, err := spec.Parse(attrs); err != nil {
		return nil, []problem{{codeInvalid, fmt.Sprintf(
			"pod annotations %s<attribute> are invalid: %s", spec.AnnotationPrefix, specProblems(err))}}
	}

	readOnly := true
	volume := &corev1.Volume{
		Name: VolumeName,
		VolumeSource: corev1.VolumeSource{CSI: &corev1.CSIVolumeSource{
			Driver:   m.cfg.DriverName,
			ReadOnly: &readOnly,
		}},
	}
	if len(attrs) > 0 {
		volume.CSI.VolumeAttributes = attrs
	}
	return volume, nil
}

// specProblems returns the problems of a spec.Parse error without the
// error's generic prefix.
func specProblems(err error) string {
	var invalid *spec.Error
	if errors.As(err, &invalid) {
		return strings.Join(invalid.Problems, "; ")
	}
	return err.Error()
}

func knownAnnotations() []string {
	names := make([]string, 0, len(attributeKeys)+3)
	for _, key := range attributeKeys {
		names = append(names, spec.AnnotationPrefix+key)
	}
	names = append(names, AnnotationMountPath, AnnotationContainers, AnnotationRuntimeProtection)
	return names
}

// missingMounts returns the indexes of the target containers that lack a
// mount of VolumeName. It rejects a target whose mount path is taken by
// another volume, or lies inside the Phantom mount, where the runtime
// cannot create a mount point on the read-only volume.
func missingMounts(containers []corev1.Container, field string, targets map[string]bool, mountPath string) ([]int, []problem) {
	var missing []int
	var problems []problem
	for i, c := range containers {
		if targets != nil && !targets[c.Name] {
			continue
		}
		if slices.ContainsFunc(c.VolumeMounts, func(vm corev1.VolumeMount) bool { return vm.Name == VolumeName }) {
			continue
		}
		for j, vm := range c.VolumeMounts {
			other := path.Clean(vm.MountPath)
			if other != mountPath && !strings.HasPrefix(other, mountPath+"/") {
				continue
			}
			problems = append(problems, problem{codeForbidden, fmt.Sprintf(
				"%s[%d].volumeMounts[%d] (container %q) mounts volume %q at %q, where Phantom mounts its secrets at %q: move that mount, or set the annotation %s to a free path",
				field, i, j, c.Name, vm.Name, vm.MountPath, mountPath, AnnotationMountPath)})
		}
		missing = append(missing, i)
	}
	return missing, problems
}

// patchOperation is one RFC 6902 operation.
type patchOperation struct {
	Op    string `json:"op"`
	Path  string `json:"path"`
	Value any    `json:"value,omitempty"`
}

// operations returns the JSON patch of the plan. An `add` to a member that
// exists replaces it, so adding a whole array is right both when the array
// is absent and when it is empty.
func (p *plan) operations(pod *corev1.Pod) []patchOperation {
	var ops []patchOperation
	if p.addVolume != nil {
		if len(pod.Spec.Volumes) == 0 {
			ops = append(ops, patchOperation{"add", "/spec/volumes", []corev1.Volume{*p.addVolume}})
		} else {
			ops = append(ops, patchOperation{"add", "/spec/volumes/-", p.addVolume})
		}
	}

	mount := corev1.VolumeMount{Name: VolumeName, MountPath: p.mountPath, ReadOnly: true}
	add := func(field string, containers []corev1.Container, indexes []int) {
		for _, i := range indexes {
			base := fmt.Sprintf("/spec/%s/%d/volumeMounts", field, i)
			if len(containers[i].VolumeMounts) == 0 {
				ops = append(ops, patchOperation{"add", base, []corev1.VolumeMount{mount}})
			} else {
				ops = append(ops, patchOperation{"add", base + "/-", mount})
			}
		}
	}
	add("initContainers", pod.Spec.InitContainers, p.initMounts)
	add("containers", pod.Spec.Containers, p.mounts)

	if pod.Annotations[AnnotationInjected] != "true" {
		if len(pod.Annotations) == 0 {
			ops = append(ops, patchOperation{"add", "/metadata/annotations", map[string]string{AnnotationInjected: "true"}})
		} else {
			ops = append(ops, patchOperation{"add", "/metadata/annotations/" + escapePointer(AnnotationInjected), "true"})
		}
	}
	return ops
}

// escapePointer escapes a map key for a JSON pointer (RFC 6901): `~`
// becomes `~0` and `/` becomes `~1`, in that order.
func escapePointer(key string) string {
	return strings.ReplaceAll(strings.ReplaceAll(key, "~", "~0"), "/", "~1")
}
