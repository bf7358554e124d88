// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Returns the calling process's thread group id in the initial pid
 * namespace. BPF_PROG_TEST_RUN runs the program in the
 * caller's context, so the loader learns the id that the monitor's programs
 * compare with bpf_get_current_pid_tgid(), which differs from getpid() when
 * the daemon runs in its own pid namespace.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("raw_tp")
int phantom_self_tgid(struct bpf_raw_tracepoint_args *ctx)
{
	return bpf_get_current_pid_tgid() >> 32;
}
