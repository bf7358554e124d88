package main

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/phantom-sec/phantom/tests/e2e/cluster"
	"github.com/phantom-sec/phantom/tests/e2e/setup"
)

// Names of the quick start's sample app.
const (
	sampleNamespace      = "demo"
	sampleServiceAccount = "app"
	samplePod            = "sample"
	// sampleSecretPath is below the default prefix <namespace>/<service
	// account>/, so the pod needs no secrets annotation.
	sampleSecretPath = sampleNamespace + "/" + sampleServiceAccount + "/greeting"
)

// sampleScript lists the pod's secret files every 30 seconds: where they
// are mounted, their mode, owner and size. It never prints a value, because
// kubelet stores container output in log files on the node's disk.
const sampleScript = `dir=/run/secrets/phantom
while true; do
  echo "$(date -u +%H:%M:%S) $dir: $(awk -v d=$dir '$2 == d { print $3, $4 }' /proc/mounts)"
  (cd $dir && find -L . -type f ! -path '*/..*' | sed 's|^./||' | sort | while read -r f; do
    echo "  $f $(stat -L -c '%a %u:%g %s bytes' "$f")"
  done)
  sleep 30
done
`

// runSample creates namespace demo with Phantom injection, an OpenBao
// role for its service account, one KV secret, and a pod that lists its
// secret files.
func runSample(ctx context.Context, c *cluster.Cluster, bao *setup.OpenBao) error {
	if err := setup.WriteTenant(ctx, bao, sampleNamespace, sampleServiceAccount); err != nil {
		return err
	}
	data := map[string]any{"message": "Hello from OpenBao, delivered by Phantom"}
	if err := setup.PutKV(ctx, bao, sampleSecretPath, data); err != nil {
		return err
	}

	if _, err := c.Kubectl(ctx, strings.NewReader(sampleManifest()), "apply", "-f", "-"); err != nil {
		return err
	}
	_, err := c.Kubectl(ctx, nil, "-n", sampleNamespace, "wait", "--for=condition=Ready", "pod/"+samplePod, "--timeout=120s")
	if err != nil {
		out, _ := c.Kubectl(ctx, nil, "-n", sampleNamespace, "describe", "pod", samplePod)
		return fmt.Errorf("sample pod not ready: %w\n%s", err, out)
	}

	// Give the first listing a moment to reach the log.
	time.Sleep(time.Second)
	out, err := c.Kubectl(ctx, nil, "-n", sampleNamespace, "logs", samplePod)
	if err != nil {
		return err
	}
	fmt.Printf("kubectl -n %s logs %s\n%s", sampleNamespace, samplePod, out)
	return nil
}

func sampleManifest() string {
	indented := "          " + strings.ReplaceAll(strings.TrimSpace(sampleScript), "\n", "\n          ")
	return fmt.Sprintf(`apiVersion: v1
kind: Namespace
metadata:
  name: %[1]s
  labels:
    phantom.dev/inject: enabled
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: %[2]s
  namespace: %[1]s
---
apiVersion: v1
kind: Pod
metadata:
  name: %[3]s
  namespace: %[1]s
spec:
  serviceAccountName: %[2]s
  # The end-to-end cluster has no pod network.
  hostNetwork: true
  securityContext:
    runAsUser: 1000
    runAsGroup: 1000
    fsGroup: 1000
  containers:
    - name: app
      image: phantom/busybox:e2e
      imagePullPolicy: Never
      command:
        - /bin/sh
        - -c
        - |
%[4]s
`, sampleNamespace, sampleServiceAccount, samplePod, indented)
}
