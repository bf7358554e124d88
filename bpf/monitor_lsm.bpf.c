// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * BPF LSM path of the runtime-protection monitor. Each hook runs before the
 * kernel grants the access, so enforce mode denies it with -EPERM and no
 * byte of the target leaves the kernel. A non-zero ret is an earlier LSM's
 * denial and passes through unchanged.
 */
#include "lsm_hooks.h"
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("lsm/ptrace_access_check")
int BPF_PROG(phantom_lsm_ptrace_access_check, struct task_struct *child,
	     unsigned int mode, int ret)
{
	if (ret)
		return ret;
	return phantom_lsm_ptrace(child, mode);
}

SEC("lsm/file_open")
int BPF_PROG(phantom_lsm_file_open, struct file *file, int ret)
{
	if (ret)
		return ret;
	return phantom_lsm_open(file);
}

SEC("lsm/file_permission")
int BPF_PROG(phantom_lsm_file_permission, struct file *file, int mask, int ret)
{
	if (ret)
		return ret;
	return phantom_lsm_file_access(file, (mask & PHANTOM_MAY_WRITE) ? PHANTOM_KIND_FILE_WRITE
								       : PHANTOM_KIND_FILE_READ);
}

SEC("lsm/mmap_file")
int BPF_PROG(phantom_lsm_mmap_file, struct file *file, unsigned long reqprot,
	     unsigned long prot, unsigned long flags, int ret)
{
	if (ret || !file)
		return ret;
	return phantom_lsm_file_access(file, PHANTOM_KIND_FILE_MMAP);
}

/* Raw tracepoint: needs neither tracefs nor BTF trampolines. */
SEC("raw_tracepoint/sched_process_exit")
int phantom_lsm_coredump(struct bpf_raw_tracepoint_args *ctx)
{
	phantom_check_coredump();
	return 0;
}
