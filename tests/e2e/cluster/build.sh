#!/usr/bin/env bash
# Builds the Kubernetes and etcd binaries of the end-to-end cluster into
# ${PHANTOM_E2E_CACHE}/bin, from the Go modules pinned under tools/.
#
# The build is skipped when the cached binaries carry a version stamp equal to
# the current one (component versions, the tool modules' go.mod and go.sum,
# and the Go version). A cold build needs several GB of memory and takes
# minutes, as ../README.md details.
#
# Usage: build.sh [--force]
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

KUBE_COMMANDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl)
ETCD_COMMANDS=(etcd etcdctl)

force=false
scratch=""
case "${1:-}" in
  "") ;;
  --force) force=true ;;
  *) die "unknown argument '$1'; usage: build.sh [--force]" ;;
esac

# Prints the stamp that identifies the wanted build.
compute_stamp() {
  local tools="${E2E_CLUSTER_DIR}/tools"
  {
    echo "kubernetes ${KUBE_VERSION}"
    echo "etcd ${ETCD_VERSION}"
    go version
    cat "${tools}/kube/go.mod" "${tools}/kube/go.sum" "${tools}/etcd/go.mod" "${tools}/etcd/go.sum"
  } | sha256sum | cut -d' ' -f1
}

cache_is_current() {
  local stamp="$1" name
  [[ -f "${E2E_BIN}/.stamp" && "$(cat "${E2E_BIN}/.stamp")" == "${stamp}" ]] || return 1
  for name in "${KUBE_COMMANDS[@]}" "${ETCD_COMMANDS[@]}"; do
    [[ -x "${E2E_BIN}/${name}" ]] || return 1
  done
}

# Prints the -ldflags value that sets the version reported by the Kubernetes
# binaries (kubectl version, /version, the node's kubeletVersion). Without it
# they report v0.0.0 and version skew checks misfire.
kube_ldflags() {
  local major minor date flags="-s -w" pkg
  major="${KUBE_VERSION#v}"
  major="${major%%.*}"
  minor="${KUBE_VERSION#v*.}"
  minor="${minor%%.*}"
  date="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    flags+=" -X ${pkg}.gitVersion=${KUBE_VERSION}"
    flags+=" -X ${pkg}.gitMajor=${major}"
    flags+=" -X ${pkg}.gitMinor=${minor}"
    # The module download carries no commit id, so gitCommit stays empty
    # rather than made up.
    flags+=" -X ${pkg}.gitCommit="
    flags+=" -X ${pkg}.gitTreeState=clean"
    flags+=" -X ${pkg}.buildDate=${date}"
  done
  printf '%s' "${flags}"
}

build_kube() {
  local out="$1" cmd pkgs=()
  for cmd in "${KUBE_COMMANDS[@]}"; do
    pkgs+=("k8s.io/kubernetes/cmd/${cmd}")
  done
  log "building Kubernetes ${KUBE_VERSION}: ${KUBE_COMMANDS[*]}"
  (
    cd "${E2E_CLUSTER_DIR}/tools/kube"
    CGO_ENABLED=0 go build -trimpath -ldflags "$(kube_ldflags)" -o "${out}/" "${pkgs[@]}"
  )
}

build_etcd() {
  local out="$1"
  log "building etcd ${ETCD_VERSION}: ${ETCD_COMMANDS[*]}"
  (
    cd "${E2E_CLUSTER_DIR}/tools/etcd"
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "${out}/etcd" go.etcd.io/etcd/server/v3
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "${out}/etcdctl" go.etcd.io/etcd/etcdctl/v3
  )
}

main() {
  command -v go >/dev/null || die "go not found in PATH; install Go 1.26 or later"

  local stamp
  stamp="$(compute_stamp)"
  if ! ${force} && cache_is_current "${stamp}"; then
    log "binaries in ${E2E_BIN} are current (stamp ${stamp:0:12}); nothing to build"
    return 0
  fi

  # Build into a scratch directory beside the cache and move the binaries in
  # only when all of them built, so an interrupted build never leaves a
  # half-updated cache behind a valid stamp.
  mkdir -p "${PHANTOM_E2E_CACHE}"
  scratch="$(mktemp -d "${PHANTOM_E2E_CACHE}/build.XXXXXX")"
  trap 'rm -rf "${scratch}"' EXIT

  local started=${SECONDS}
  build_kube "${scratch}"
  build_etcd "${scratch}"

  mkdir -p "${E2E_BIN}"
  rm -f "${E2E_BIN}/.stamp"
  local name
  for name in "${KUBE_COMMANDS[@]}" "${ETCD_COMMANDS[@]}"; do
    mv -f "${scratch}/${name}" "${E2E_BIN}/${name}"
  done
  echo "${stamp}" >"${E2E_BIN}/.stamp"
  log "built ${#KUBE_COMMANDS[@]} Kubernetes and ${#ETCD_COMMANDS[@]} etcd binaries into ${E2E_BIN} in $((SECONDS - started))s"
}

main "$@"
