package chart

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/utils/ptr"

	"github.com/phantom-sec/phantom/tests/chart/render"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/golden")

func TestLint(t *testing.T) {
	t.Parallel()
	cases := map[string]map[string]any{
		"minimal": minimalValues(),
		"all":     allValues(t),
	}
	for name, values := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			err := render.Lint(render.Options{ChartDir: repoPath(t, chartPath), Values: values})
			if err != nil {
				t.Errorf("helm lint:\n%v", err)
			}
		})
	}
}

func TestGoldenRenders(t *testing.T) {
	t.Parallel()
	cases := map[string]map[string]any{
		"default": minimalValues(),
		"all":     allValues(t),
	}
	for name, values := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			got := renderValues(t, values)
			golden := repoPath(t, filepath.Join(goldenDir, name+".yaml"))
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("read golden file (run go test ./tests/chart -update to create it): %v", err)
			}
			if diff := cmp.Diff(string(want), got); diff != "" {
				t.Errorf("render differs from %s (-want +got); if intended, run go test ./tests/chart -update:\n%s", golden, diff)
			}
		})
	}
}

// TestDeployUpToDate fails when deploy/phantom.yaml is not what
// `make manifests` renders from the current chart.
func TestDeployUpToDate(t *testing.T) {
	t.Parallel()
	got, err := render.Deploy(render.Options{ChartDir: repoPath(t, chartPath)}, repoPath(t, deployValuesPath))
	if err != nil {
		t.Fatal(err)
	}
	want := readFile(t, deployOutputPath)
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("%s is stale: run \"make manifests\" and commit the result (-file +render):\n%s", deployOutputPath, diff)
	}
	decodeAll(t, got)
}

func TestObjectsDecodeStrictly(t *testing.T) {
	t.Parallel()
	cases := map[string]map[string]any{
		"default": minimalValues(),
		"all":     allValues(t),
	}
	for name, values := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			manifests := renderValues(t, values)
			docs := splitDocuments(manifests)
			objects := decodeAll(t, manifests)
			if len(objects) != len(docs) {
				t.Errorf("decoded objects: got %d, want one per document (%d)", len(objects), len(docs))
			}
		})
	}
}

// TestDecoderRejectsUnknownField shows that the strict decoder used above
// catches a misspelled field.
func TestDecoderRejectsUnknownField(t *testing.T) {
	t.Parallel()
	manifests := renderValues(t, minimalValues())
	broken := strings.Replace(manifests, "mountPropagation: Bidirectional", "mountPropogation: Bidirectional", 1)
	if broken == manifests {
		t.Fatal("render has no mountPropagation field to misspell")
	}
	dec := decoder(t)
	var failed bool
	for _, doc := range splitDocuments(broken) {
		if _, _, err := dec.Decode([]byte(doc.body), nil, nil); err != nil {
			failed = true
			if !strings.Contains(err.Error(), "mountPropogation") {
				t.Errorf("decode error %q does not name the unknown field", err)
			}
		}
	}
	if !failed {
		t.Error("decoding a misspelled field: no error, want one")
	}
}

func TestSchemaRejectsBadValues(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		set    []string
		values func(map[string]any)
		want   []string
	}{
		{
			name: "address missing",
			values: func(v map[string]any) {
				delete(v, "openbao")
			},
			want: []string{"/openbao", "missing property 'address'"},
		},
		{
			name: "address without scheme",
			set:  []string{"openbao.address=openbao.example.eu:8200"},
			want: []string{"/openbao/address", "does not match pattern"},
		},
		{
			name: "port of wrong type",
			set:  []string{"node.metricsPort=metrics"},
			want: []string{"/node/metricsPort", "got string, want integer"},
		},
		{
			name: "unknown top-level key",
			set:  []string{"replicas=3"},
			want: []string{"additional properties 'replicas' not allowed"},
		},
		{
			name: "unknown nested key",
			set:  []string{"node.imag.tag=1"},
			want: []string{"/node", "additional properties 'imag' not allowed"},
		},
		{
			name: "empty audience",
			set:  []string{"csiDriver.tokenRequest.audience="},
			want: []string{"/csiDriver/tokenRequest/audience", "minLength"},
		},
		{
			name: "token expiration below kubernetes minimum",
			set:  []string{"csiDriver.tokenRequest.expirationSeconds=599"},
			want: []string{"/csiDriver/tokenRequest/expirationSeconds", "minimum"},
		},
		{
			name: "unknown auth method",
			set:  []string{"openbao.auth.method=ldap"},
			want: []string{"/openbao/auth/method", "'jwt'", "'kubernetes'"},
		},
		{
			name: "runtime protection as boolean",
			values: func(v map[string]any) {
				// What a bare `off` in a YAML values file becomes.
				v["node"] = map[string]any{"runtimeProtection": false}
			},
			want: []string{"/node/runtimeProtection", "'off'"},
		},
		{
			name: "ca certificate not PEM",
			set:  []string{"openbao.caCert=not a certificate"},
			want: []string{"/openbao/caCert", "does not match pattern"},
		},
		{
			name: "bad duration",
			set:  []string{"node.gracePeriod=1 hour"},
			want: []string{"/node/gracePeriod", "does not match pattern"},
		},
		{
			name: "toleration with unknown operator",
			set:  []string{"node.tolerations[0].operator=Matches"},
			want: []string{"/node/tolerations/0/operator"},
		},
		{
			name: "relative kubelet directory",
			set:  []string{"kubeletDir=var/lib/kubelet"},
			want: []string{"/kubeletDir", "does not match pattern"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			values := withSet(t, tc.set...)
			if tc.values != nil {
				tc.values(values)
			}
			err := renderError(t, values)
			if missing := errorContains(err, tc.want...); missing != nil {
				t.Errorf("error %q: %v", err, missing)
			}
			if !strings.Contains(err.Error(), "values don't meet the specifications of the schema") {
				t.Errorf("error %q: not a schema validation error", err)
			}
		})
	}
}

func TestSchemaAcceptsQuotedOff(t *testing.T) {
	t.Parallel()
	objects := decodeAll(t, renderValues(t, withSet(t, "node.runtimeProtection=off")))
	args := flagValues(t, container(t, nodeDaemonSet(t, objects).Spec.Template.Spec).Args)
	if got := args["runtime-protection"]; got != "off" {
		t.Errorf("--runtime-protection: got %q, want %q", got, "off")
	}
}

func TestDisruptionBudgetNeedsSpareReplica(t *testing.T) {
	t.Parallel()
	err := renderError(t, withSet(t, "webhook.replicas=1"))
	if missing := errorContains(err, "webhook.podDisruptionBudget.minAvailable (1)", "webhook.replicas (1)"); missing != nil {
		t.Errorf("error %q: %v", err, missing)
	}

	objects := decodeAll(t, renderValues(t, withSet(t, "webhook.replicas=1", "webhook.podDisruptionBudget.enabled=false")))
	if pdbs := objectsOf[*policyv1.PodDisruptionBudget](objects); len(pdbs) != 0 {
		t.Errorf("disabled budget: got %d PodDisruptionBudgets, want 0", len(pdbs))
	}
}

func TestCSIDriver(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		values   map[string]any
		audience string
		seconds  int64
		inSecret bool
	}{
		{name: "default", values: minimalValues(), audience: "openbao", seconds: 600, inSecret: true},
		{name: "all", values: allValues(t), audience: "bao.example.eu", seconds: 3600, inSecret: false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			driver := oneOf[*storagev1.CSIDriver](t, decodeAll(t, renderValues(t, tc.values)))
			want := storagev1.CSIDriverSpec{
				AttachRequired:       ptr.To(false),
				PodInfoOnMount:       ptr.To(true),
				VolumeLifecycleModes: []storagev1.VolumeLifecycleMode{storagev1.VolumeLifecycleEphemeral},
				StorageCapacity:      ptr.To(false),
				FSGroupPolicy:        ptr.To(storagev1.FileFSGroupPolicy),
				TokenRequests: []storagev1.TokenRequest{
					{Audience: tc.audience, ExpirationSeconds: ptr.To(tc.seconds)},
				},
				RequiresRepublish:            ptr.To(true),
				ServiceAccountTokenInSecrets: ptr.To(tc.inSecret),
			}
			if driver.Name != "secrets.phantom.dev" {
				t.Errorf("CSIDriver name: got %q, want secrets.phantom.dev", driver.Name)
			}
			if diff := cmp.Diff(want, driver.Spec); diff != "" {
				t.Errorf("CSIDriver spec (-want +got):\n%s", diff)
			}
		})
	}
}

func TestNodeDaemonSet(t *testing.T) {
	t.Parallel()
	objects := decodeAll(t, renderValues(t, minimalValues()))
	ds := nodeDaemonSet(t, objects)
	pod := ds.Spec.Template.Spec
	c := container(t, pod)

	if !pod.HostPID {
		t.Error("hostPID: got false, want true (the monitor resolves host process IDs)")
	}
	if pod.HostNetwork {
		t.Error("hostNetwork: got true, want false")
	}
	if pod.PriorityClassName != "system-node-critical" {
		t.Errorf("priorityClassName: got %q, want system-node-critical", pod.PriorityClassName)
	}
	wantTolerations := []corev1.Toleration{{Operator: corev1.TolerationOpExists}}
	if diff := cmp.Diff(wantTolerations, pod.Tolerations); diff != "" {
		t.Errorf("tolerations (-want +got):\n%s", diff)
	}
	if pod.AutomountServiceAccountToken == nil || !*pod.AutomountServiceAccountToken {
		t.Error("automountServiceAccountToken: want true, the plugin reads namespaces and records events")
	}

	sc := c.SecurityContext
	if sc == nil || sc.Privileged == nil || !*sc.Privileged {
		t.Fatal("securityContext.privileged: want true, Bidirectional mount propagation requires it")
	}
	if sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("securityContext.readOnlyRootFilesystem: want true")
	}

	wantMounts := map[string]struct {
		hostPath    string
		readOnly    bool
		propagation corev1.MountPropagationMode
	}{
		"/var/lib/kubelet/pods":                        {"/var/lib/kubelet/pods", false, corev1.MountPropagationBidirectional},
		"/var/lib/kubelet/plugins/secrets.phantom.dev": {"/var/lib/kubelet/plugins/secrets.phantom.dev", false, ""},
		"/var/lib/kubelet/plugins_registry":            {"/var/lib/kubelet/plugins_registry", false, ""},
		"/run/phantom":                                 {"/run/phantom", false, ""},
		"/sys/fs/cgroup":                               {"/sys/fs/cgroup", true, ""},
		"/sys/kernel/btf":                              {"/sys/kernel/btf", true, ""},
		"/sys/fs/bpf":                                  {"/sys/fs/bpf", false, ""},
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		volumes[v.Name] = v
	}
	for _, m := range c.VolumeMounts {
		want, ok := wantMounts[m.MountPath]
		if !ok {
			t.Errorf("unexpected volume mount %s", m.MountPath)
			continue
		}
		delete(wantMounts, m.MountPath)
		v := volumes[m.Name]
		if v.HostPath == nil || v.HostPath.Path != want.hostPath {
			t.Errorf("mount %s: volume %s is not hostPath %s", m.MountPath, m.Name, want.hostPath)
		}
		if m.ReadOnly != want.readOnly {
			t.Errorf("mount %s: readOnly %v, want %v", m.MountPath, m.ReadOnly, want.readOnly)
		}
		if got := ptr.Deref(m.MountPropagation, ""); got != want.propagation {
			t.Errorf("mount %s: mountPropagation %q, want %q", m.MountPath, got, want.propagation)
		}
	}
	for path := range wantMounts {
		t.Errorf("missing volume mount %s", path)
	}
	if ht := volumes["state-dir"].HostPath; ht == nil || ptr.Deref(ht.Type, "") != corev1.HostPathDirectoryOrCreate {
		t.Error("state-dir: want hostPath type DirectoryOrCreate")
	}

	var nodeName bool
	for _, e := range c.Env {
		if e.Name == "NODE_NAME" && e.ValueFrom != nil && e.ValueFrom.FieldRef != nil && e.ValueFrom.FieldRef.FieldPath == "spec.nodeName" {
			nodeName = true
		}
	}
	if !nodeName {
		t.Error("env NODE_NAME from spec.nodeName: missing")
	}

	for name, probe := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Port.StrVal != "metrics" {
			t.Errorf("%s probe: want an HTTP GET on the metrics port", name)
		}
	}
	if c.Resources.Limits.Memory().IsZero() || c.Resources.Requests.Memory().IsZero() {
		t.Error("resources: want memory requests and limits")
	}
}

func TestNodeArgs(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		values map[string]any
		want   map[string]string
	}{
		{
			name:   "default",
			values: minimalValues(),
			want: map[string]string{
				"endpoint":           "unix:///var/lib/kubelet/plugins/secrets.phantom.dev/csi.sock",
				"node-id":            "$(NODE_NAME)",
				"registration-dir":   "/var/lib/kubelet/plugins_registry",
				"openbao-addr":       testAddress,
				"auth-method":        "jwt",
				"token-audience":     "openbao",
				"kv-mount":           "secret",
				"metrics-addr":       ":9810",
				"log-level":          "info",
				"log-format":         "json",
				"state-dir":          "/run/phantom",
				"tmpfs-size-limit":   "4Mi",
				"runtime-protection": "audit",
				"grace-period":       "1h",
				"refresh-interval":   "5m",
			},
		},
		{
			name:   "all",
			values: allValues(t),
			want: map[string]string{
				"endpoint":               "unix:///tmp/phantom-e2e/kubelet/plugins/secrets.phantom.dev/csi.sock",
				"node-id":                "$(NODE_NAME)",
				"registration-dir":       "/tmp/phantom-e2e/kubelet/plugins_registry",
				"openbao-addr":           testAddress,
				"openbao-ca-file":        "/etc/phantom/openbao-ca/ca.crt",
				"auth-method":            "kubernetes",
				"auth-mount":             "kubernetes/cluster-a",
				"token-audience":         "bao.example.eu",
				"kv-mount":               "kv",
				"kv-prefix":              "cluster-a",
				"metrics-addr":           ":9900",
				"log-level":              "debug",
				"log-format":             "text",
				"state-dir":              "/run/phantom-test",
				"tmpfs-size-limit":       "8Mi",
				"runtime-protection":     "enforce",
				"grace-period":           "2h30m",
				"refresh-interval":       "90s",
				"service-account-issuer": "https://kubernetes.default.svc.cluster.local",
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			objects := decodeAll(t, renderValues(t, tc.values))
			got := flagValues(t, container(t, nodeDaemonSet(t, objects).Spec.Template.Spec).Args)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("phantom-node flags (-want +got):\n%s", diff)
			}
		})
	}
}

func TestOpenBaoCAConfigMap(t *testing.T) {
	t.Parallel()
	values := allValues(t)
	objects := decodeAll(t, renderValues(t, values))
	cms := objectsOf[*corev1.ConfigMap](objects)
	if len(cms) != 1 {
		t.Fatalf("ConfigMaps: got %d, want 1", len(cms))
	}
	wantPEM := strings.TrimSpace(values["openbao"].(map[string]any)["caCert"].(string))
	if got := strings.TrimSpace(cms[0].Data["ca.crt"]); got != wantPEM {
		t.Errorf("ca.crt: got %q, want the PEM of openbao.caCert", got)
	}

	pod := nodeDaemonSet(t, objects).Spec.Template.Spec
	var mounted bool
	for _, v := range pod.Volumes {
		if v.ConfigMap != nil && v.ConfigMap.Name == cms[0].Name {
			mounted = true
		}
	}
	if !mounted {
		t.Errorf("ConfigMap %s is not a volume of the node plugin", cms[0].Name)
	}

	none := objectsOf[*corev1.ConfigMap](decodeAll(t, renderValues(t, minimalValues())))
	if len(none) != 0 {
		t.Errorf("ConfigMaps without openbao.caCert: got %d, want 0", len(none))
	}
}

func TestWebhookDeployment(t *testing.T) {
	t.Parallel()
	objects := decodeAll(t, renderValues(t, minimalValues()))
	deploy := webhookDeployment(t, objects)
	pod := deploy.Spec.Template.Spec
	c := container(t, pod)

	if got := ptr.Deref(deploy.Spec.Replicas, 0); got != 2 {
		t.Errorf("replicas: got %d, want 2", got)
	}
	psc := pod.SecurityContext
	if psc == nil || !ptr.Deref(psc.RunAsNonRoot, false) || psc.SeccompProfile == nil || psc.SeccompProfile.Type != corev1.SeccompProfileTypeRuntimeDefault {
		t.Error("pod securityContext: want runAsNonRoot and seccomp RuntimeDefault")
	}
	sc := c.SecurityContext
	if sc == nil {
		t.Fatal("container securityContext: missing")
	}
	if ptr.Deref(sc.Privileged, false) {
		t.Error("container securityContext: privileged")
	}
	if ptr.Deref(sc.AllowPrivilegeEscalation, true) {
		t.Error("container securityContext: allowPrivilegeEscalation not false")
	}
	if !ptr.Deref(sc.ReadOnlyRootFilesystem, false) {
		t.Error("container securityContext: readOnlyRootFilesystem not true")
	}
	if sc.Capabilities == nil || !cmp.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) != 0 {
		t.Error("container securityContext: want capabilities drop [ALL], add none")
	}

	env := map[string]string{}
	for _, e := range c.Env {
		if e.ValueFrom != nil && e.ValueFrom.FieldRef != nil {
			env[e.Name] = e.ValueFrom.FieldRef.FieldPath
		}
	}
	if diff := cmp.Diff(map[string]string{"POD_NAMESPACE": "metadata.namespace", "POD_NAME": "metadata.name"}, env); diff != "" {
		t.Errorf("env from fields (-want +got):\n%s", diff)
	}
	for name, probe := range map[string]*corev1.Probe{"liveness": c.LivenessProbe, "readiness": c.ReadinessProbe} {
		if probe == nil || probe.HTTPGet == nil || probe.HTTPGet.Scheme != corev1.URISchemeHTTPS {
			t.Errorf("%s probe: want an HTTPS GET", name)
		}
	}

	anti := pod.Affinity
	if anti == nil || anti.PodAntiAffinity == nil || len(anti.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution) != 1 ||
		anti.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[0].PodAffinityTerm.TopologyKey != "kubernetes.io/hostname" {
		t.Error("affinity: want preferred pod anti-affinity on kubernetes.io/hostname")
	}

	svc := oneOf[*corev1.Service](t, objects)
	if len(svc.Spec.Ports) != 1 || svc.Spec.Ports[0].Port != 443 || svc.Spec.Ports[0].TargetPort.StrVal != "https" {
		t.Errorf("webhook Service ports: got %+v, want 443 to the https container port", svc.Spec.Ports)
	}
	if len(c.Ports) != 1 || c.Ports[0].Name != "https" || c.Ports[0].ContainerPort != 8443 {
		t.Errorf("container ports: got %+v, want https on 8443", c.Ports)
	}

	pdb := oneOf[*policyv1.PodDisruptionBudget](t, objects)
	if pdb.Spec.MinAvailable == nil || pdb.Spec.MinAvailable.IntValue() != 1 {
		t.Errorf("PodDisruptionBudget minAvailable: got %v, want 1", pdb.Spec.MinAvailable)
	}
}

func TestWebhookArgs(t *testing.T) {
	t.Parallel()
	objects := decodeAll(t, renderValues(t, allValues(t)))
	got := flagValues(t, container(t, webhookDeployment(t, objects).Spec.Template.Spec).Args)
	want := map[string]string{
		"listen-addr":         ":9443",
		"namespace":           "$(POD_NAMESPACE)",
		"pod-name":            "$(POD_NAME)",
		"service-name":        "phantom-secrets-webhook",
		"webhook-config-name": "phantom-secrets-webhook",
		"driver-name":         "secrets.phantom.dev",
		"token-audience":      "bao.example.eu",
		"token-expiration":    "3600s",
		"token-in-secrets":    "false",
		"leader-election-id":  "phantom-secrets-webhook",
		"replica-selector":    "app.kubernetes.io/component=webhook,app.kubernetes.io/instance=phantom,app.kubernetes.io/name=secrets",
		"cert-validity":       "12h",
		"log-level":           "warn",
		"log-format":          "text",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("phantom-webhook flags (-want +got):\n%s", diff)
	}
}

func TestMutatingWebhookConfiguration(t *testing.T) {
	t.Parallel()
	objects := decodeAll(t, renderValues(t, minimalValues()))
	config := oneOf[*admissionregistrationv1.MutatingWebhookConfiguration](t, objects)
	if len(config.Webhooks) != 2 {
		t.Fatalf("webhooks: got %d, want 2", len(config.Webhooks))
	}
	for _, w := range config.Webhooks {
		if len(w.ClientConfig.CABundle) != 0 {
			t.Errorf("webhook %s: caBundle set, want it left to the reconciler", w.Name)
		}
		if ptr.Deref(w.FailurePolicy, "") != admissionregistrationv1.Fail {
			t.Errorf("webhook %s: failurePolicy %v, want Fail", w.Name, ptr.Deref(w.FailurePolicy, ""))
		}
		if ptr.Deref(w.TimeoutSeconds, 0) != 5 {
			t.Errorf("webhook %s: timeoutSeconds %d, want 5", w.Name, ptr.Deref(w.TimeoutSeconds, 0))
		}
		if ptr.Deref(w.ReinvocationPolicy, "") != admissionregistrationv1.IfNeededReinvocationPolicy {
			t.Errorf("webhook %s: reinvocationPolicy %v, want IfNeeded", w.Name, ptr.Deref(w.ReinvocationPolicy, ""))
		}
		svc := w.ClientConfig.Service
		if svc == nil || svc.Name != "phantom-webhook" || svc.Namespace != render.DefaultNamespace || ptr.Deref(svc.Path, "") != "/mutate" {
			t.Errorf("webhook %s: clientConfig.service %+v, want phantom-webhook/%s at /mutate", w.Name, svc, render.DefaultNamespace)
		}
		excluded := false
		for _, expr := range w.NamespaceSelector.MatchExpressions {
			if expr.Key == corev1.LabelMetadataName && expr.Operator == "NotIn" &&
				cmp.Equal(expr.Values, []string{"kube-system", render.DefaultNamespace}) {
				excluded = true
			}
		}
		if !excluded {
			t.Errorf("webhook %s: namespaceSelector does not exclude kube-system and %s", w.Name, render.DefaultNamespace)
		}
	}
}

func TestRBAC(t *testing.T) {
	t.Parallel()
	objects := decodeAll(t, renderValues(t, allValues(t)))

	var rules []rbacv1.PolicyRule
	for _, r := range objectsOf[*rbacv1.ClusterRole](objects) {
		rules = append(rules, r.Rules...)
	}
	for _, r := range objectsOf[*rbacv1.Role](objects) {
		rules = append(rules, r.Rules...)
	}
	for _, rule := range rules {
		for _, res := range rule.Resources {
			if res == "secrets" || res == "*" {
				t.Errorf("rule %+v grants %q: no component may touch Secrets", rule, res)
			}
		}
		for _, verb := range rule.Verbs {
			switch verb {
			case "*", "deletecollection", "escalate", "bind", "impersonate":
				t.Errorf("rule %+v grants verb %q", rule, verb)
			case "delete":
				if !cmp.Equal(rule.Resources, []string{"csidrivers"}) || !cmp.Equal(rule.ResourceNames, []string{"secrets.phantom.dev"}) {
					t.Errorf("rule %+v grants delete on more than the CSIDriver", rule)
				}
			}
		}
		for _, group := range rule.APIGroups {
			if group == "*" {
				t.Errorf("rule %+v grants every API group", rule)
			}
		}
	}
}

// TestRBACRules pins every rule, so that a new right is a reviewed change.
// The chart README explains each one.
func TestRBACRules(t *testing.T) {
	t.Parallel()
	objects := decodeAll(t, renderValues(t, allValues(t)))
	got := map[string][]rbacv1.PolicyRule{}
	for _, r := range objectsOf[*rbacv1.ClusterRole](objects) {
		got["ClusterRole/"+r.Name] = r.Rules
	}
	for _, r := range objectsOf[*rbacv1.Role](objects) {
		got["Role/"+r.Namespace+"/"+r.Name] = r.Rules
	}

	const webhook = "phantom-secrets-webhook"
	want := map[string][]rbacv1.PolicyRule{
		"ClusterRole/phantom-secrets-node": {
			{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get", "list", "watch"}},
			{NonResourceURLs: []string{"/openid/v1/jwks"}, Verbs: []string{"get"}},
			{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
		},
		"ClusterRole/" + webhook: {
			{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations"}, ResourceNames: []string{webhook}, Verbs: []string{"get", "list", "watch", "update"}},
			{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations"}, Verbs: []string{"create"}},
			{APIGroups: []string{"storage.k8s.io"}, Resources: []string{"csidrivers"}, ResourceNames: []string{"secrets.phantom.dev"}, Verbs: []string{"get", "list", "watch", "update", "delete"}},
			{APIGroups: []string{"storage.k8s.io"}, Resources: []string{"csidrivers"}, Verbs: []string{"create"}},
			{APIGroups: []string{""}, Resources: []string{"namespaces"}, Verbs: []string{"get", "list", "watch"}},
			{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: []string{"create", "patch"}},
		},
		"Role/" + render.DefaultNamespace + "/" + webhook: {
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, ResourceNames: []string{webhook}, Verbs: []string{"get", "update"}},
			{APIGroups: []string{"coordination.k8s.io"}, Resources: []string{"leases"}, Verbs: []string{"create"}},
			{APIGroups: []string{""}, Resources: []string{"pods"}, Verbs: []string{"list", "watch", "patch"}},
		},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("RBAC rules (-want +got):\n%s", diff)
	}
}

// TestServiceAccountsBound checks that each workload runs as its own
// service account and that the bindings name those accounts.
func TestServiceAccountsBound(t *testing.T) {
	t.Parallel()
	objects := decodeAll(t, renderValues(t, minimalValues()))
	accounts := map[string]bool{}
	for _, sa := range objectsOf[*corev1.ServiceAccount](objects) {
		accounts[sa.Name] = true
	}
	ds := nodeDaemonSet(t, objects)
	deploy := webhookDeployment(t, objects)
	for _, name := range []string{ds.Spec.Template.Spec.ServiceAccountName, deploy.Spec.Template.Spec.ServiceAccountName} {
		if !accounts[name] {
			t.Errorf("service account %q of a workload is not rendered", name)
		}
	}
	if ds.Spec.Template.Spec.ServiceAccountName == deploy.Spec.Template.Spec.ServiceAccountName {
		t.Error("node plugin and webhook share a service account")
	}

	var subjects []rbacv1.Subject
	for _, b := range objectsOf[*rbacv1.ClusterRoleBinding](objects) {
		subjects = append(subjects, b.Subjects...)
	}
	for _, b := range objectsOf[*rbacv1.RoleBinding](objects) {
		subjects = append(subjects, b.Subjects...)
	}
	for _, s := range subjects {
		if s.Kind != rbacv1.ServiceAccountKind || !accounts[s.Name] || s.Namespace != render.DefaultNamespace {
			t.Errorf("binding subject %+v is not a rendered service account of the release namespace", s)
		}
	}
}

func TestMonitoringOptional(t *testing.T) {
	t.Parallel()
	objects := decodeAll(t, renderValues(t, minimalValues()))
	if n := len(objectsOf[*monitoringv1.ServiceMonitor](objects)) + len(objectsOf[*monitoringv1.PrometheusRule](objects)); n != 0 {
		t.Errorf("monitoring objects by default: got %d, want 0", n)
	}

	objects = decodeAll(t, renderValues(t, allValues(t)))
	monitors := objectsOf[*monitoringv1.ServiceMonitor](objects)
	if len(monitors) != 2 {
		t.Fatalf("ServiceMonitors: got %d, want 2", len(monitors))
	}
	services := objectsOf[*corev1.Service](objects)
	for _, m := range monitors {
		if m.Labels["release"] != "prometheus" {
			t.Errorf("ServiceMonitor %s: label release=prometheus from values missing", m.Name)
		}
		matched := false
		for _, svc := range services {
			if labelsMatch(m.Spec.Selector.MatchLabels, svc.Labels) && hasPort(svc, m.Spec.Endpoints[0].Port) {
				matched = true
			}
		}
		if !matched {
			t.Errorf("ServiceMonitor %s selects no Service with port %q", m.Name, m.Spec.Endpoints[0].Port)
		}
	}

	rule := oneOf[*monitoringv1.PrometheusRule](t, objects)
	alerts := map[string]string{}
	for _, g := range rule.Spec.Groups {
		for _, r := range g.Rules {
			alerts[r.Alert] = r.Expr.String()
		}
	}
	wantMetric := map[string]string{
		"PhantomOpenBaoUnreachable":     "phantom_bao_requests_total",
		"PhantomServingFromGraceCache":  "phantom_cache_grace_served_total",
		"PhantomCircuitOpen":            "phantom_circuit_state",
		"PhantomRuntimeProtectionEvent": "phantom_monitor_events_total",
		"PhantomWebhookObjectRestored":  "phantom_webhook_restores_total",
		"PhantomPublishErrors":          "phantom_node_publish_total",
	}
	for alert, metric := range wantMetric {
		expr, ok := alerts[alert]
		if !ok {
			t.Errorf("alert %s: missing", alert)
			continue
		}
		if !strings.Contains(expr, metric) {
			t.Errorf("alert %s: expression %q does not use %s", alert, expr, metric)
		}
	}
}

func labelsMatch(selector, labels map[string]string) bool {
	for k, v := range selector {
		if labels[k] != v {
			return false
		}
	}
	return len(selector) > 0
}

func hasPort(svc *corev1.Service, name string) bool {
	for _, p := range svc.Spec.Ports {
		if p.Name == name {
			return true
		}
	}
	return false
}

// TestSelectorsMatchPodLabels checks that each workload's selector matches
// its own pod template and not the other component's.
func TestSelectorsMatchPodLabels(t *testing.T) {
	t.Parallel()
	objects := decodeAll(t, renderValues(t, allValues(t)))
	ds := nodeDaemonSet(t, objects)
	deploy := webhookDeployment(t, objects)
	if !labelsMatch(ds.Spec.Selector.MatchLabels, ds.Spec.Template.Labels) {
		t.Error("DaemonSet selector does not match its pod template")
	}
	if !labelsMatch(deploy.Spec.Selector.MatchLabels, deploy.Spec.Template.Labels) {
		t.Error("Deployment selector does not match its pod template")
	}
	if labelsMatch(ds.Spec.Selector.MatchLabels, deploy.Spec.Template.Labels) || labelsMatch(deploy.Spec.Selector.MatchLabels, ds.Spec.Template.Labels) {
		t.Error("a selector matches the other component's pods")
	}
	for _, svc := range objectsOf[*corev1.Service](objects) {
		if !labelsMatch(svc.Spec.Selector, ds.Spec.Template.Labels) && !labelsMatch(svc.Spec.Selector, deploy.Spec.Template.Labels) {
			t.Errorf("Service %s selects no pod", svc.Name)
		}
	}
	for _, pdb := range objectsOf[*policyv1.PodDisruptionBudget](objects) {
		if !labelsMatch(pdb.Spec.Selector.MatchLabels, deploy.Spec.Template.Labels) {
			t.Errorf("PodDisruptionBudget %s does not select the webhook pods", pdb.Name)
		}
	}

	// The reconciler builds the caBundle from the pods this selects.
	args := flagValues(t, container(t, deploy.Spec.Template.Spec).Args)
	replicas, err := labels.Parse(args["replica-selector"])
	if err != nil {
		t.Fatalf("--replica-selector %q: %v", args["replica-selector"], err)
	}
	if !replicas.Matches(labels.Set(deploy.Spec.Template.Labels)) {
		t.Errorf("--replica-selector %q does not match the webhook pods", replicas)
	}
	if replicas.Matches(labels.Set(ds.Spec.Template.Labels)) {
		t.Errorf("--replica-selector %q matches the node plugin pods", replicas)
	}
}
