// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * BPF LSM path of the runtime-protection monitor. Each hook runs before the
 * kernel grants the access, so enforce mode denies it with -EPERM and no
 * byte of the target leaves the kernel.
 */
#include "phantom.h"
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/*
 * ptrace attach, process_vm_readv/writev, pidfd_getfd and opening
 * /proc/<pid>/mem all check PTRACE_MODE_ATTACH here. Read-mode checks
 * (/proc/<pid>/ns, /proc/<pid>/status, runc exec, CNI) pass untouched.
 */
SEC("lsm/ptrace_access_check")
int BPF_PROG(phantom_lsm_ptrace_access_check, struct task_struct *child,
	     unsigned int mode, int ret)
{
	struct phantom_access a = { .target = child, .detail = mode };
	struct phantom_pod *pod;

	if (ret)
		return ret;
	if (!(mode & PHANTOM_PTRACE_MODE_ATTACH))
		return 0;

	a.pod_cgroup = phantom_task_pod(child, &pod);
	if (!pod)
		return 0;
	/* /proc/<pid>/mem checks with the opener's file-system credentials. */
	a.kind = (mode & PHANTOM_PTRACE_MODE_FSCREDS) ? PHANTOM_KIND_PROC_MEM : PHANTOM_KIND_PTRACE;
	if (phantom_check(&a, pod, PHANTOM_ACTION_DENY) == PHANTOM_VERDICT_DENY)
		return -PHANTOM_EPERM;
	return 0;
}

/* Opening a Phantom volume file, or /proc/<pid>/environ, which is read-mode. */
SEC("lsm/file_open")
int BPF_PROG(phantom_lsm_file_open, struct file *file, int ret)
{
	struct super_block *sb;

	if (ret)
		return ret;
	phantom_selftest_mark();
	sb = file->f_inode->i_sb;
	if (phantom_check_file(file, sb->s_dev, sb->s_magic, PHANTOM_KIND_FILE_OPEN,
			       false, true, PHANTOM_ACTION_DENY) == PHANTOM_VERDICT_DENY)
		return -PHANTOM_EPERM;
	return 0;
}

/*
 * Reads and writes, including through a descriptor passed from the pod.
 * This runs on every read and write on the node, so it reads the device
 * with plain loads from the trusted file pointer and stops at the prefilter.
 */
SEC("lsm/file_permission")
int BPF_PROG(phantom_lsm_file_permission, struct file *file, int mask, int ret)
{
	if (ret)
		return ret;
	if (phantom_check_file(file, file->f_inode->i_sb->s_dev, 0, PHANTOM_KIND_FILE_READ,
			       false, false, PHANTOM_ACTION_DENY) == PHANTOM_VERDICT_DENY)
		return -PHANTOM_EPERM;
	return 0;
}

SEC("lsm/mmap_file")
int BPF_PROG(phantom_lsm_mmap_file, struct file *file, unsigned long reqprot,
	     unsigned long prot, unsigned long flags, int ret)
{
	if (ret || !file)
		return ret;
	if (phantom_check_file(file, file->f_inode->i_sb->s_dev, 0, PHANTOM_KIND_FILE_MMAP,
			       false, false, PHANTOM_ACTION_DENY) == PHANTOM_VERDICT_DENY)
		return -PHANTOM_EPERM;
	return 0;
}

/* Raw tracepoint: needs neither tracefs nor BTF trampolines. */
SEC("raw_tracepoint/sched_process_exit")
int phantom_lsm_coredump(struct bpf_raw_tracepoint_args *ctx)
{
	phantom_check_coredump();
	return 0;
}
