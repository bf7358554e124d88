package driver

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/prometheus/common/expfmt"

	"github.com/phantom-sec/phantom/pkg/spec"
)

// TestNoSecretInOutput plants a canary secret and publishes it through
// success and failure paths with debug logging, then searches the logs, the
// errors and the metrics for the canary and for the pod's token.
func TestNoSecretInOutput(t *testing.T) {
	h := newHarness(t)
	const canary = "canary-4b1d-value-7e3f"
	h.writeKV("payments/canary", map[string]any{"value": canary, "bad name": canary})

	var captured strings.Builder
	record := func(err error) {
		if err != nil {
			captured.WriteString(err.Error() + "\n")
		}
	}

	p := newPod("payments", "api")
	ok := h.request(p, "- path: payments/canary\n  field: value")
	token := h.token(p, testAudience)
	ok.VolumeContext[spec.KubeletTokens] = tokensJSON(testAudience, token)
	record(h.publish(ok))
	if got := readFile(t, filepath.Join(ok.TargetPath, "value")); got != canary {
		t.Fatalf("value = %q, want the canary: the test would prove nothing", got)
	}
	record(h.publish(ok))

	failures := []string{
		"- path: payments/canary\n  field: missing", // missing field lists field names
		"- path: payments/canary",                   // field "bad name" is not a file name
		"- path: billing/db\n  field: password",     // permission denied
	}
	for _, secrets := range failures {
		req := h.request(p, secrets)
		req.VolumeId += "-fail"
		req.TargetPath += "-fail"
		req.VolumeContext[spec.KubeletTokens] = tokensJSON(testAudience, token)
		err := h.publish(req)
		if err == nil {
			t.Fatalf("publish of %q succeeded, want an error", secrets)
		}
		record(err)
	}
	h.bao.SetDown(true)
	other := h.request(newPod("payments", "api"), "- path: payments/canary\n  field: value")
	record(h.publish(other))
	h.bao.SetDown(false)
	record(h.unpublish(ok))

	var metrics bytes.Buffer
	families, err := h.reg.Gather()
	must(t, err)
	for _, mf := range families {
		if _, err := expfmt.MetricFamilyToText(&metrics, mf); err != nil {
			t.Fatalf("encode metrics: %v", err)
		}
	}
	if n := testutil.CollectAndCount(h.reg, "phantom_node_publish_total"); n == 0 {
		t.Fatal("no publish metrics gathered: the metrics check would prove nothing")
	}

	signature := token[strings.LastIndex(token, ".")+1:]
	outputs := map[string]string{"logs": h.logs.String(), "errors": captured.String(), "metrics": metrics.String(), "state directory": stateFiles(t, h.stateDir)}
	if !strings.Contains(outputs["logs"], `"level":"DEBUG"`) && !strings.Contains(outputs["logs"], "volume published") {
		t.Fatalf("captured logs are empty or lack the expected lines:\n%s", outputs["logs"])
	}
	for name, out := range outputs {
		for what, needle := range map[string]string{"canary": canary, "token": token, "token signature": signature} {
			if strings.Contains(out, needle) {
				t.Errorf("%s contain the %s", name, what)
			}
		}
	}
}

// stateFiles returns the content of every file in the state directory: the
// sealed cache and the index.
func stateFiles(t *testing.T, dir string) string {
	t.Helper()
	var all strings.Builder
	count := 0
	err := filepath.WalkDir(dir, func(path string, entry fs.DirEntry, err error) error {
		if err != nil || entry.IsDir() {
			return err
		}
		data, err := os.ReadFile(path)
		all.Write(data)
		count++
		return err
	})
	must(t, err)
	if count < 2 {
		t.Fatalf("state directory holds %d files, want sealed entries and index records: the check would prove nothing", count)
	}
	return all.String()
}
