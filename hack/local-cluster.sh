#!/usr/bin/env bash
# Starts a local single-node Kubernetes cluster with Phantom installed from
# its Helm chart, the OpenBao test server and a sample app in namespace demo,
# and leaves them running. Needs root; the first run compiles Kubernetes,
# which takes several minutes. Stop everything with hack/e2e.sh --down.
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/e2e.sh" --keep --skip-tests "$@"
