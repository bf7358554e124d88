// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Test-only program that runs phantom_decide() and phantom_emit() on a
 * crafted context through BPF_PROG_TEST_RUN, so the decision shared by the
 * LSM and tracepoint paths is tested in the kernel where LSM programs
 * cannot be loaded. Context, as raw tracepoint arguments:
 *   args[0] actor thread group id
 *   args[1] actor's ancestor cgroup id at the pod's level
 *   args[2] target pod cgroup id (0: the target is not a registered pod)
 *   args[3] non-zero for an attach-mode access
 *   args[4] enum phantom_kind to record
 * The program returns the enum phantom_verdict.
 */
#include "phantom.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("raw_tp")
int phantom_decision_test(struct bpf_raw_tracepoint_args *ctx)
{
	struct phantom_access a = {
		.pod_cgroup = ctx->args[2],
		.kind = (__u32)ctx->args[4],
	};
	struct phantom_pod *pod;

	pod = bpf_map_lookup_elem(&phantom_pods, &a.pod_cgroup);
	return phantom_judge(&a, pod, ctx->args[3] != 0, (__u32)ctx->args[0], ctx->args[1],
			     PHANTOM_ACTION_DENY);
}
