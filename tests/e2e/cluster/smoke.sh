#!/usr/bin/env bash
# Checks a running end-to-end cluster: a busybox pod on the host network runs
# `echo hello` to completion with its service-account token mounted, and
# `kubectl logs` returns "hello" through the API server and kubelet.
#
# Usage: smoke.sh   (after up.sh)
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_state_paths

[[ -f "${KUBECONFIG_ADMIN}" ]] || die "${KUBECONFIG_ADMIN} not found; run up.sh first"
kubectl() { "${E2E_BIN}/kubectl" --kubeconfig "${KUBECONFIG_ADMIN}" "$@"; }

POD=phantom-e2e-smoke
kubectl delete pod "${POD}" --ignore-not-found --wait >/dev/null

started=${SECONDS}
kubectl apply -f - >/dev/null <<MANIFEST
apiVersion: v1
kind: Pod
metadata:
  name: ${POD}
  namespace: default
spec:
  hostNetwork: true
  restartPolicy: Never
  containers:
  - name: hello
    image: ${E2E_BUSYBOX_IMAGE}
    imagePullPolicy: Never
    command: ["/bin/sh", "-c", "echo hello && test -s /var/run/secrets/kubernetes.io/serviceaccount/token"]
MANIFEST

if ! kubectl wait --for=jsonpath='{.status.phase}'=Succeeded "pod/${POD}" --timeout=120s >/dev/null; then
  kubectl describe pod "${POD}" >&2 || true
  die "pod ${POD} did not succeed"
fi
log "pod ${POD} succeeded after $((SECONDS - started))s"

output="$(kubectl logs "${POD}")"
[[ "${output}" == hello ]] || die "kubectl logs ${POD} returned '${output}', expected 'hello'"
log "kubectl logs ${POD}: ${output}"

kubectl delete pod "${POD}" --wait >/dev/null
log "smoke test passed"
