#!/usr/bin/env bash
# Builds the container images of the end-to-end cluster as OCI image
# archives under ${PHANTOM_E2E_CACHE}/images and imports them into the
# cluster's containerd. No registry is reachable, so every image is
# assembled from static host binaries by cmd/mkimage.
#
# Usage:
#   images.sh base
#       Build the pod sandbox image (phantom/pause:e2e, from cmd/pause) and
#       the test image phantom/busybox:e2e (Debian's busybox-static, with a
#       symbolic link for every applet in /bin).
#   images.sh binary NAME TAG BINARY [--busybox] [--add DEST=SRC[:MODE]]... [-- ENTRYPOINT...]
#       Package the static BINARY as phantom/NAME:TAG, installed at
#       /usr/local/bin/NAME, which is also the entrypoint unless one follows
#       "--". --busybox adds busybox and its applets (sh, mount, umount...)
#       to /bin, and --add copies further host files. Prints the archive path.
#   images.sh import [ARCHIVE...]
#       Import archives (default: every archive in the image cache) into the
#       running cluster's containerd, in the namespace the kubelet uses.
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

REPO_ROOT="$(cd "${E2E_CLUSTER_DIR}/../../.." && pwd)"
TOOLS_BIN="${PHANTOM_E2E_CACHE}/tools"
BUSYBOX="${E2E_BUSYBOX_BINARY:-/bin/busybox}"

# Compile mkimage and pause from this repository. Go's build cache makes a
# repeated call cheap.
build_helpers() {
  mkdir -p "${TOOLS_BIN}"
  (
    cd "${REPO_ROOT}"
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "${TOOLS_BIN}/mkimage" ./tests/e2e/cluster/cmd/mkimage
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "${TOOLS_BIN}/pause" ./tests/e2e/cluster/cmd/pause
  )
}

# Print mkimage flags that install busybox at /bin/busybox with one symbolic
# link per applet, so images can run sh, mount, cat and the like.
busybox_flags() {
  [[ -x "${BUSYBOX}" ]] || die "${BUSYBOX} not found; install Debian's busybox-static or set E2E_BUSYBOX_BINARY"
  if ! file_is_static "${BUSYBOX}"; then
    die "${BUSYBOX} is dynamically linked; images have no libc, so use busybox-static"
  fi
  printf '%s\n' -add "/bin/busybox=${BUSYBOX}:0755" -dir /tmp
  local applet
  for applet in $("${BUSYBOX}" --list); do
    [[ "${applet}" == busybox ]] && continue
    printf '%s\n' -symlink "/bin/${applet}=busybox"
  done
}

# Succeed when $1 is statically linked, which means it has no PT_INTERP
# program header. readelf is part of binutils, which gcc depends on.
file_is_static() {
  if command -v readelf >/dev/null; then
    if readelf -l "$1" 2>/dev/null | grep -q 'Requesting program interpreter'; then
      return 1
    fi
  else
    log "readelf not found; not checking that $1 is statically linked"
  fi
}

build_base() {
  build_helpers
  mkdir -p "${E2E_IMAGES}"
  "${TOOLS_BIN}/mkimage" -name "${E2E_PAUSE_IMAGE}" -o "${E2E_IMAGES}/pause.tar" \
    -add "/pause=${TOOLS_BIN}/pause:0755" -entrypoint /pause >/dev/null

  local flags
  mapfile -t flags < <(busybox_flags)
  "${TOOLS_BIN}/mkimage" -name "${E2E_BUSYBOX_IMAGE}" -o "${E2E_IMAGES}/busybox.tar" \
    "${flags[@]}" -cmd /bin/sh >/dev/null
  log "built ${E2E_PAUSE_IMAGE} and ${E2E_BUSYBOX_IMAGE} in ${E2E_IMAGES}"
}

build_binary() {
  (($# >= 3)) || die "usage: images.sh binary NAME TAG BINARY [--busybox] [--add DEST=SRC[:MODE]]... [-- ENTRYPOINT...]"
  local name="$1" tag="$2" binary="$3"
  shift 3
  [[ "${name}" =~ ^[a-z0-9][a-z0-9._-]*$ ]] || die "image name '${name}' is invalid; use lower-case letters, digits, '.', '_' and '-'"
  [[ "${tag}" =~ ^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$ ]] || die "image tag '${tag}' is invalid; use letters, digits, '.', '_' and '-'"
  [[ -f "${binary}" ]] || die "binary '${binary}' not found"
  file_is_static "${binary}" || die "binary '${binary}' is dynamically linked; build it with CGO_ENABLED=0"

  local flags=(-add "/usr/local/bin/${name}=${binary}:0755") entrypoint=()
  while (($# > 0)); do
    case "$1" in
      --busybox)
        local bb
        mapfile -t bb < <(busybox_flags)
        flags+=("${bb[@]}")
        shift
        ;;
      --add)
        (($# >= 2)) || die "--add needs DEST=SRC[:MODE]"
        flags+=(-add "$2")
        shift 2
        ;;
      --)
        shift
        entrypoint=("$@")
        break
        ;;
      *) die "unknown option '$1' for images.sh binary" ;;
    esac
  done
  if ((${#entrypoint[@]} == 0)); then
    entrypoint=("/usr/local/bin/${name}")
  fi
  local arg
  for arg in "${entrypoint[@]}"; do
    flags+=(-entrypoint "${arg}")
  done

  build_helpers
  mkdir -p "${E2E_IMAGES}"
  local archive="${E2E_IMAGES}/${name}-${tag}.tar"
  "${TOOLS_BIN}/mkimage" -name "phantom/${name}:${tag}" -o "${archive}" "${flags[@]}" >/dev/null
  log "built docker.io/phantom/${name}:${tag}"
  echo "${archive}"
}

import_archives() {
  e2e_state_paths
  [[ -S "${CONTAINERD_SOCK}" ]] || die "containerd socket ${CONTAINERD_SOCK} not found; start the cluster with up.sh first"
  local archives=("$@")
  if ((${#archives[@]} == 0)); then
    shopt -s nullglob
    archives=("${E2E_IMAGES}"/*.tar)
    shopt -u nullglob
  fi
  ((${#archives[@]} > 0)) || die "no image archives in ${E2E_IMAGES}; run images.sh base first"

  local archive
  for archive in "${archives[@]}"; do
    ctr --address "${CONTAINERD_SOCK}" -n "${E2E_CTR_NAMESPACE}" images import "${archive}" >/dev/null ||
      die "import of ${archive} into containerd failed"
    log "imported ${archive}"
  done
}

main() {
  (($# > 0)) || die "usage: images.sh base | binary NAME TAG BINARY [...] | import [ARCHIVE...]"
  local command="$1"
  shift
  case "${command}" in
    base) build_base ;;
    binary) build_binary "$@" ;;
    import) import_archives "$@" ;;
    *) die "unknown command '${command}'; use base, binary or import" ;;
  esac
}

main "$@"
