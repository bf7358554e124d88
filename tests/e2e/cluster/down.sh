#!/usr/bin/env bash
# Stops the end-to-end cluster that up.sh started and removes what it left in
# the kernel: processes, mounts and cgroups. Only processes recorded in
# ${PHANTOM_E2E_STATE}/pids, the containers of the cluster's containerd and
# the processes inside the cluster's own cgroup subtree are signalled.
#
# Safe to run any number of times, also after a failed or partial up.sh.
# Exits non-zero when something could not be removed, naming it.
#
# Usage: down.sh [--purge]   (--purge also deletes the state directory,
#                             logs included)
set -euo pipefail

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
e2e_state_paths

STOP_TIMEOUT="${E2E_STOP_TIMEOUT:-15}"

purge=false
case "${1:-}" in
  "") ;;
  --purge) purge=true ;;
  *) die "unknown argument '$1'; usage: down.sh [--purge]" ;;
esac

# Prints "pid start" of the recorded process NAME, if any.
recorded() {
  [[ -f "${PIDS}" ]] || return 0
  awk -v name="$1" '$1 == name { print $2, $3 }' "${PIDS}"
}

# Send SIGTERM to the recorded process NAME, wait up to STOP_TIMEOUT seconds,
# then send SIGKILL.
stop_recorded() {
  local name="$1" pid start
  read -r pid start < <(recorded "${name}") || true
  [[ -n "${pid:-}" ]] || return 0
  if ! process_matches "${pid}" "${start}"; then
    return 0
  fi

  log "stopping ${name} (pid ${pid})"
  kill -TERM "${pid}" 2>/dev/null || true
  local deadline=$((SECONDS + STOP_TIMEOUT))
  while process_matches "${pid}" "${start}"; do
    if ((SECONDS >= deadline)); then
      log "${name} (pid ${pid}) ignored SIGTERM for ${STOP_TIMEOUT}s; sending SIGKILL"
      kill -KILL "${pid}" 2>/dev/null || true
      wait_for 10 bash -c "! kill -0 ${pid} 2>/dev/null || grep -q '^State:.*zombie' /proc/${pid}/status"
      break
    fi
    sleep 0.2
  done
}

containerd_running() {
  local pid start
  read -r pid start < <(recorded containerd) || true
  [[ -n "${pid:-}" ]] && process_matches "${pid}" "${start}" && [[ -S "${CONTAINERD_SOCK}" ]]
}

ctr_k8s() {
  ctr --address "${CONTAINERD_SOCK}" -n "${E2E_CTR_NAMESPACE}" "$@"
}

# Kill and delete every task (running container) of the cluster's containerd,
# so no container process outlives it. Deleting a task also unmounts its
# root filesystem and lets its shim exit.
stop_tasks() {
  containerd_running || return 0
  local tasks id
  mapfile -t tasks < <(ctr_k8s tasks ls -q 2>/dev/null || true)
  ((${#tasks[@]} > 0)) || return 0

  log "killing ${#tasks[@]} containerd task(s)"
  for id in "${tasks[@]}"; do
    ctr_k8s tasks kill --all --signal SIGKILL "${id}" >/dev/null 2>&1 || true
  done
  # The CRI plugin deletes a task itself when it receives the exit event, so
  # a task may be gone before the delete below. Only a remaining task is an error.
  for id in "${tasks[@]}"; do
    wait_for 10 task_stopped "${id}" || true
    ctr_k8s tasks delete --force "${id}" >/dev/null 2>&1 || true
  done
  local remaining
  remaining="$(ctr_k8s tasks ls -q 2>/dev/null || true)"
  [[ -z "${remaining}" ]] || log "containerd tasks remain after delete: ${remaining//$'\n'/ }"
}

# Succeed when task $1 is stopped or gone.
task_stopped() {
  ctr_k8s tasks ls 2>/dev/null | awk -v id="$1" '$1 == id && $3 != "STOPPED" { found = 1 } END { exit found }'
}

# Print the pids of containerd shims that serve this cluster's containerd,
# recognized by the socket path in their command line.
cluster_shims() {
  local dir pid args
  for dir in /proc/[0-9]*; do
    pid="${dir#/proc/}"
    args="$(tr '\0' ' ' 2>/dev/null <"${dir}/cmdline")" || continue
    if [[ "${args}" == *containerd-shim* && " ${args} " == *" ${CONTAINERD_SOCK} "* ]]; then
      echo "${pid}"
    fi
  done
}

stop_shims() {
  local pids pid
  mapfile -t pids < <(cluster_shims)
  ((${#pids[@]} > 0)) || return 0
  log "stopping ${#pids[@]} leftover containerd shim(s): ${pids[*]}"
  for pid in "${pids[@]}"; do
    kill -KILL "${pid}" 2>/dev/null || true
  done
}

# Print the pids still inside the cluster's cgroup subtree in any hierarchy.
# Every process there is a container process of this cluster.
cgroup_processes() {
  local hierarchy
  for hierarchy in $(cgroup_hierarchies); do
    [[ -d "${hierarchy}${CGROUP_ROOT}" ]] || continue
    find "${hierarchy}${CGROUP_ROOT}" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -un
}

kill_cgroup_processes() {
  local pids
  mapfile -t pids < <(cgroup_processes)
  ((${#pids[@]} > 0)) || return 0
  log "killing ${#pids[@]} process(es) left in cgroup ${CGROUP_ROOT}: ${pids[*]}"
  kill -KILL "${pids[@]}" 2>/dev/null || true
  wait_for 10 bash -c "[[ -z \"\$(find /sys/fs/cgroup -path '*${CGROUP_ROOT}/*' -name cgroup.procs -exec cat {} + 2>/dev/null)\" ]]" || true
}

unmount_all() {
  local dir mounts mount failed=0
  for dir in "${STATE}" "${KUBELET_ROOT}"; do
    mapfile -t mounts < <(mounts_under "${dir}")
    for mount in "${mounts[@]}"; do
      if ! umount "${mount}" 2>/dev/null; then
        log "umount ${mount} failed; detaching it lazily"
        umount -l "${mount}" 2>/dev/null || {
          log "could not unmount ${mount}"
          failed=1
        }
      fi
    done
  done
  return "${failed}"
}

# Remove the fixed host paths that up.sh found missing before the cluster
# started, once nothing is mounted below them.
remove_created_paths() {
  [[ -f "${CREATED_PATHS}" ]] || return 0
  local path failed=0
  while read -r path; do
    [[ -e "${path}" ]] || continue
    if mounts_under "${path}" | grep -q .; then
      log "not removing ${path}: something is mounted below it"
      failed=1
      continue
    fi
    rm -rf --one-file-system "${path}"
  done <"${CREATED_PATHS}"
  return "${failed}"
}

# Delete the local route of the service CIDR that up.sh added.
remove_service_route() {
  [[ -f "${SERVICE_ROUTE}" ]] || return 0
  local cidr
  cidr="$(cat "${SERVICE_ROUTE}")"
  if [[ -n "$(ip route show table local exact "${cidr}")" ]] && ! ip route del local "${cidr}" dev lo table local; then
    log "could not delete the local route for ${cidr}"
    return 1
  fi
  rm -f "${SERVICE_ROUTE}"
}

# Print the nat table's rules that forward a ClusterIP to 127.0.0.1, in
# iptables -S form.
service_rules() {
  command -v iptables >/dev/null || return 0
  iptables -t nat -S OUTPUT 2>/dev/null | grep -F -- "--comment ${IPTABLES_COMMENT}" || true
}

remove_service_rules() {
  local rule failed=0
  while read -r rule; do
    [[ -n "${rule}" ]] || continue
    # shellcheck disable=SC2086 # the rule is a list of iptables arguments
    iptables -t nat ${rule/#-A /-D } || failed=1
  done < <(service_rules)
  return "${failed}"
}

remove_cgroups() {
  local hierarchy dir failed=0
  for hierarchy in $(cgroup_hierarchies); do
    dir="${hierarchy}${CGROUP_ROOT}"
    [[ -d "${dir}" ]] || continue
    # rmdir fails with EBUSY for a moment after the last process exits.
    if ! wait_for 10 bash -c "find '${dir}' -depth -type d -exec rmdir {} + 2>/dev/null; [[ ! -d '${dir}' ]]"; then
      log "could not remove cgroup ${dir}"
      failed=1
    fi
  done
  return "${failed}"
}

# Print a line for every recorded process, mount or cgroup that remains.
leftovers() {
  local name pid start hierarchy
  if [[ -f "${PIDS}" ]]; then
    while read -r name pid start; do
      process_matches "${pid}" "${start}" && echo "process ${name} (pid ${pid})"
    done <"${PIDS}"
  fi
  cluster_shims | sed 's/^/containerd shim pid /'
  mounts_under "${STATE}" | sed 's/^/mount /'
  [[ "${KUBELET_ROOT}" == "${STATE}"/* ]] || mounts_under "${KUBELET_ROOT}" | sed 's/^/mount /'
  for hierarchy in $(cgroup_hierarchies); do
    [[ -d "${hierarchy}${CGROUP_ROOT}" ]] && echo "cgroup ${hierarchy}${CGROUP_ROOT}"
  done
  [[ -f "${SERVICE_ROUTE}" ]] && echo "local route $(cat "${SERVICE_ROUTE}")"
  service_rules | sed 's/^/iptables nat rule /'
  return 0
}

main() {
  require_root
  # up.sh records the kubelet root it used, which may lie outside STATE.
  if [[ -f "${STATE}/kubelet-root" ]]; then
    KUBELET_ROOT="$(cat "${STATE}/kubelet-root")"
  fi
  local started=${SECONDS}

  # kubelet first, so it does not restart the containers stopped next.
  stop_recorded kubelet
  stop_tasks
  stop_recorded containerd
  stop_shims
  stop_recorded kube-scheduler
  stop_recorded kube-controller-manager
  stop_recorded kube-apiserver
  stop_recorded etcd
  kill_cgroup_processes

  local status=0
  unmount_all || status=1
  remove_cgroups || status=1
  remove_created_paths || status=1
  remove_service_rules || status=1
  remove_service_route || status=1

  local remaining
  remaining="$(leftovers)"
  if [[ -n "${remaining}" ]]; then
    log "down.sh could not remove:"
    echo "${remaining}" >&2
    exit 1
  fi
  ((status == 0)) || exit 1
  [[ -f "${PIDS}" ]] && : >"${PIDS}"

  if ${purge} && [[ -d "${STATE}" ]]; then
    rm -rf --one-file-system "${STATE}"
    log "removed ${STATE}"
  fi
  log "cluster stopped in $((SECONDS - started))s; no process, mount or cgroup of it remains"
}

main "$@"
