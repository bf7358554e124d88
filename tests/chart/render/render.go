// Package render renders and lints the Phantom Helm chart through Helm's Go
// packages, as `helm template` and `helm lint` do, so that the chart tests
// and `make manifests` need no helm binary.
//
// Rendering pins the Kubernetes version that templates and the chart's
// kubeVersion constraint see, so the output does not depend on the client-go
// version that Helm would otherwise derive it from.
package render

import (
	"errors"
	"fmt"
	"maps"
	"os"
	"path"
	"strings"

	"helm.sh/helm/v4/pkg/chart/common"
	commonutil "helm.sh/helm/v4/pkg/chart/common/util"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	chartutil "helm.sh/helm/v4/pkg/chart/v2/util"
	"helm.sh/helm/v4/pkg/engine"
	releaseutil "helm.sh/helm/v4/pkg/release/v1/util"
	"helm.sh/helm/v4/pkg/strvals"
	"sigs.k8s.io/yaml"
)

// KubeVersion is the Kubernetes version that rendering and linting assume.
const KubeVersion = "v1.37.0"

// Options selects the chart, the release and the values of one render.
type Options struct {
	// ChartDir is the directory of the unpacked chart.
	ChartDir string
	// ReleaseName is the Helm release name, "phantom" when empty.
	ReleaseName string
	// Namespace is the release namespace, "phantom-system" when empty.
	Namespace string
	// Values are the user-supplied values, merged over the chart's
	// values.yaml as `helm template -f` merges them.
	Values map[string]any
}

// Defaults of Options.
const (
	DefaultReleaseName = "phantom"
	DefaultNamespace   = "phantom-system"
)

func (o Options) withDefaults() Options {
	if o.ReleaseName == "" {
		o.ReleaseName = DefaultReleaseName
	}
	if o.Namespace == "" {
		o.Namespace = DefaultNamespace
	}
	if o.Values == nil {
		o.Values = map[string]any{}
	}
	return o
}

// Render returns the chart's manifests in the format of `helm template`:
// each document preceded by "---" and a "# Source:" comment, in Helm's
// install order. Values that break the chart's JSON schema, a template
// error and a manifest that is not YAML all return an error.
func Render(opts Options) (string, error) {
	opts = opts.withDefaults()

	ch, err := loader.Load(opts.ChartDir)
	if err != nil {
		return "", fmt.Errorf("load chart %s: %w", opts.ChartDir, err)
	}
	caps, err := capabilities()
	if err != nil {
		return "", err
	}
	if c := ch.Metadata.KubeVersion; c != "" && !chartutil.IsCompatibleRange(c, caps.KubeVersion.String()) {
		return "", fmt.Errorf("chart requires kubeVersion %s, which Kubernetes %s does not meet", c, caps.KubeVersion.String())
	}

	releaseOptions := common.ReleaseOptions{
		Name:      opts.ReleaseName,
		Namespace: opts.Namespace,
		Revision:  1,
		IsInstall: true,
	}
	values, err := commonutil.ToRenderValuesWithSchemaValidation(ch, opts.Values, releaseOptions, caps, false)
	if err != nil {
		return "", fmt.Errorf("chart values: %w", err)
	}
	files, err := engine.Render(ch, values)
	if err != nil {
		return "", fmt.Errorf("render chart: %w", err)
	}
	for name := range files {
		if path.Base(name) == "NOTES.txt" {
			delete(files, name)
		}
	}

	hooks, manifests, err := releaseutil.SortManifests(files, nil, releaseutil.InstallOrder)
	if err != nil {
		return "", fmt.Errorf("parse rendered manifests: %w", err)
	}
	var out strings.Builder
	for _, m := range manifests {
		fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", m.Name, m.Content)
	}
	for _, h := range hooks {
		fmt.Fprintf(&out, "---\n# Source: %s\n%s\n", h.Path, h.Manifest)
	}
	return out.String(), nil
}

// Lint runs Helm's chart linter with the given values and returns its
// findings of severity warning or error, joined. Informational findings,
// such as a missing icon, are not failures.
func Lint(opts Options) error {
	opts = opts.withDefaults()

	kubeVersion, err := common.ParseKubeVersion(KubeVersion)
	if err != nil {
		return fmt.Errorf("parse kube version %s: %w", KubeVersion, err)
	}
	result := lint.RunAll(opts.ChartDir, opts.Values, opts.Namespace, lint.WithKubeVersion(kubeVersion))

	var errs []error
	for _, msg := range result.Messages {
		if msg.Severity >= support.WarningSev {
			errs = append(errs, msg)
		}
	}
	return errors.Join(errs...)
}

// ReadValuesFiles reads YAML values files and merges them in order, later
// files winning, as repeated `helm template -f` flags do.
func ReadValuesFiles(paths ...string) (map[string]any, error) {
	merged := map[string]any{}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("read values file: %w", err)
		}
		var values map[string]any
		if err := yaml.Unmarshal(data, &values); err != nil {
			return nil, fmt.Errorf("parse values file %s: %w", p, err)
		}
		merged = mergeValues(merged, values)
	}
	return merged, nil
}

// SetValues applies `helm template --set` assignments such as
// "openbao.address=https://bao:8200" to values.
func SetValues(values map[string]any, assignments ...string) error {
	for _, a := range assignments {
		if err := strvals.ParseInto(a, values); err != nil {
			return fmt.Errorf("parse --set %q: %w", a, err)
		}
	}
	return nil
}

// mergeValues merges src into dst the way Helm merges values files: maps
// merge key by key, any other value in src replaces the one in dst.
func mergeValues(dst, src map[string]any) map[string]any {
	out := maps.Clone(dst)
	for key, value := range src {
		srcMap, srcIsMap := value.(map[string]any)
		dstMap, dstIsMap := out[key].(map[string]any)
		if srcIsMap && dstIsMap {
			out[key] = mergeValues(dstMap, srcMap)
			continue
		}
		out[key] = value
	}
	return out
}

func capabilities() (*common.Capabilities, error) {
	kubeVersion, err := common.ParseKubeVersion(KubeVersion)
	if err != nil {
		return nil, fmt.Errorf("parse kube version %s: %w", KubeVersion, err)
	}
	caps := common.DefaultCapabilities.Copy()
	caps.KubeVersion = *kubeVersion
	return caps, nil
}
