#!/usr/bin/env bash
# Runs Phantom's end-to-end suite on a single-node Kubernetes cluster on this
# machine. It installs the Debian packages the cluster needs and builds the
# cluster's binaries (cached) and Phantom's images. It starts the cluster and
# the OpenBao test server, installs Phantom from its Helm chart and runs
# `go test ./tests/e2e/...`. Then it tears everything down again, also when
# a step fails. Needs root. See tests/e2e/README.md.
#
# Usage: hack/e2e.sh [--keep] [--skip-tests] | --down
#   --keep        leave the cluster, OpenBao and Phantom running afterwards,
#                 with the sample app in namespace demo
#   --skip-tests  do not run the suite (with --keep: a local cluster to try
#                 Phantom on, as hack/local-cluster.sh starts it)
#   --down        stop what --keep left running, and exit
#
# Environment: E2E_KUBELET_SYNC_FREQUENCY (default 10s here), PHANTOM_E2E_*
# and E2E_* of tests/e2e/cluster/lib.sh, and PHANTOM_OPENBAO_ADDR with
# PHANTOM_OPENBAO_TOKEN (and PHANTOM_OPENBAO_CACERT) to use a real OpenBao
# instead of the test server.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CLUSTER="${ROOT}/tests/e2e/cluster"
# shellcheck source=../tests/e2e/cluster/lib.sh
source "${CLUSTER}/lib.sh"
e2e_state_paths

PACKAGES=(containerd runc containernetworking-plugins busybox-static openssl curl iproute2 iptables)
IMAGE_TAG=e2e
BAOSERVER_ADDR="${PHANTOM_E2E_BAOSERVER_ADDR:-127.0.0.1:18200}"
BAOSERVER_PID="${STATE}/baoserver.pid"
TOOLS="${PHANTOM_E2E_CACHE}/tools"
# kubelet republishes each volume this often, which bounds how long a
# rotated secret takes to reach a running pod.
export E2E_KUBELET_SYNC_FREQUENCY="${E2E_KUBELET_SYNC_FREQUENCY:-10s}"

keep=false
skip_tests=false
down_only=false
for arg in "$@"; do
  case "${arg}" in
    --keep) keep=true ;;
    --skip-tests) skip_tests=true ;;
    --down) down_only=true ;;
    *) die "unknown argument '${arg}'; usage: hack/e2e.sh [--keep] [--skip-tests] | --down" ;;
  esac
done

TIMINGS=()
current_phase=""
phase_started=${SECONDS}
# Start phase $1, ending the one before and recording how long it took.
phase() {
  if [[ -n "${current_phase}" ]]; then
    TIMINGS+=("$(printf '%-24s %5ss' "${current_phase}" $((SECONDS - phase_started)))")
  fi
  current_phase="$1"
  phase_started=${SECONDS}
}

print_timings() {
  ((${#TIMINGS[@]} > 0)) || return 0
  log "timings:"
  local line
  for line in "${TIMINGS[@]}"; do
    echo "  ${line}" >&2
  done
}

# -------------------------------------------------------------------------

install_packages() {
  local missing=() pkg
  for pkg in "${PACKAGES[@]}"; do
    if [[ "$(dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null)" != "install ok installed" ]]; then
      missing+=("${pkg}")
    fi
  done
  ((${#missing[@]} > 0)) || return 0
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

build() {
  "${CLUSTER}/build.sh"
  make -C "${ROOT}" build
  mkdir -p "${TOOLS}"
  (
    cd "${ROOT}"
    CGO_ENABLED=0 go build -trimpath -o "${TOOLS}/baoserver" ./tests/e2e/cmd/baoserver
    CGO_ENABLED=0 go build -trimpath -o "${TOOLS}/phantom-e2e" ./tests/e2e/cmd/phantom-e2e
  )
  [[ -x "${ROOT}/bin/phantom-webhook" ]] || die "bin/phantom-webhook was not built; cmd/phantom-webhook is missing"
  # The same content as build/*.Dockerfile: the static binary at
  # /usr/local/bin and nothing else, so a dependency on a tool that the
  # released images lack fails here too.
  NODE_ARCHIVE="$("${CLUSTER}/images.sh" binary phantom-node "${IMAGE_TAG}" "${ROOT}/bin/phantom-node")"
  WEBHOOK_ARCHIVE="$("${CLUSTER}/images.sh" binary phantom-webhook "${IMAGE_TAG}" "${ROOT}/bin/phantom-webhook")"
}

start_baoserver() {
  if [[ -n "${PHANTOM_OPENBAO_ADDR:-}" ]]; then
    log "using OpenBao at ${PHANTOM_OPENBAO_ADDR}"
    return 0
  fi
  local dir="${STATE}/openbao"
  rm -rf "${dir}"
  setsid "${TOOLS}/baoserver" -addr "${BAOSERVER_ADDR}" -dir "${dir}" >"${LOGS}/baoserver.log" 2>&1 </dev/null &
  local pid=$!
  echo "${pid} $(process_start_time "${pid}")" >"${BAOSERVER_PID}"
  wait_for 30 test -s "${dir}/root-token" || {
    tail -n 20 "${LOGS}/baoserver.log" >&2
    die "baoserver did not start; see ${LOGS}/baoserver.log"
  }
  log "started baoserver (pid ${pid}) at $(cat "${dir}/address")"
}

# Stop the baoserver recorded in BAOSERVER_PID, if it still runs.
stop_baoserver() {
  [[ -f "${BAOSERVER_PID}" ]] || return 0
  local pid start
  read -r pid start <"${BAOSERVER_PID}" || true
  if [[ -n "${pid:-}" ]] && process_matches "${pid}" "${start}"; then
    log "stopping baoserver (pid ${pid})"
    kill -TERM "${pid}" 2>/dev/null || true
    wait_for 10 bash -c "! kill -0 ${pid} 2>/dev/null" || kill -KILL "${pid}" 2>/dev/null || true
  fi
  rm -f "${BAOSERVER_PID}"
}

teardown() {
  stop_baoserver
  "${CLUSTER}/down.sh"
}

run_tests() {
  log "running the end-to-end suite"
  local status=0
  (
    cd "${ROOT}"
    PHANTOM_E2E=1 PHANTOM_E2E_REQUIRED=1 PHANTOM_E2E_STATE="${STATE}" \
      go test -count=1 -v -timeout 20m ./tests/e2e/...
  ) || status=$?
  return "${status}"
}

print_keep_help() {
  cat >&2 <<EOF

The cluster keeps running with Phantom and the sample app:
  source ${STATE}/env
  kubectl -n demo logs sample
  kubectl -n demo exec sample -- cat /run/secrets/phantom/greeting/message
Stop it with: hack/e2e.sh --down
EOF
}

# -------------------------------------------------------------------------

on_exit() {
  local status=$?
  trap - EXIT
  if ((status != 0)) && [[ -n "${current_phase}" ]]; then
    current_phase+=" (failed)"
  fi
  if ${keep} || [[ "${E2E_KEEP_ON_FAILURE:-0}" == 1 && ${status} != 0 ]]; then
    phase ""
    log "leaving the cluster running (stop it with hack/e2e.sh --down)"
  else
    phase teardown
    teardown || {
      log "teardown failed; run hack/e2e.sh --down"
      ((status != 0)) || status=1
    }
    phase ""
  fi
  print_timings
  log "hack/e2e.sh finished with status ${status} after $((SECONDS - script_started))s"
  exit "${status}"
}

main() {
  require_root
  if ${down_only}; then
    teardown
    return 0
  fi

  # A cluster that an earlier --keep left running goes first.
  teardown >/dev/null 2>&1 || teardown
  trap on_exit EXIT

  phase packages
  install_packages
  phase build
  build
  phase "cluster up"
  "${CLUSTER}/up.sh"
  "${CLUSTER}/images.sh" import "${NODE_ARCHIVE}" "${WEBHOOK_ARCHIVE}"
  phase "install Phantom"
  start_baoserver
  "${TOOLS}/phantom-e2e" install -state "${STATE}"

  local status=0
  if ! ${skip_tests}; then
    phase tests
    run_tests || status=$?
  fi
  if ${keep}; then
    phase "sample app"
    "${TOOLS}/phantom-e2e" sample -state "${STATE}"
    print_keep_help
  fi
  return "${status}"
}

script_started=${SECONDS}
main
