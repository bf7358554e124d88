/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Bodies of the BPF LSM hooks. monitor_lsm.bpf.c attaches them to the LSM
 * hooks. lsm_verify_test.bpf.c wraps them in BTF tracepoint programs, which
 * receive the same trusted pointers, so kernels that refuse LSM programs
 * can still run them through the verifier.
 */
#ifndef PHANTOM_LSM_HOOKS_H
#define PHANTOM_LSM_HOOKS_H

#include "phantom.h"

/*
 * ptrace attach, process_vm_readv/writev, pidfd_getfd and opening
 * /proc/<pid>/mem all check PTRACE_MODE_ATTACH. Read-mode checks
 * (/proc/<pid>/ns, /proc/<pid>/status, runc exec, CNI) pass untouched.
 */
static __always_inline int phantom_lsm_ptrace(struct task_struct *child, unsigned int mode)
{
	struct phantom_access a = { .target = child, .detail = mode };
	struct phantom_pod *pod;

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
static __always_inline int phantom_lsm_open(struct file *file)
{
	struct super_block *sb;

	phantom_selftest_mark();
	sb = file->f_inode->i_sb;
	if (phantom_check_file(file, sb->s_dev, sb->s_magic, PHANTOM_KIND_FILE_OPEN,
			       false, true, PHANTOM_ACTION_DENY) == PHANTOM_VERDICT_DENY)
		return -PHANTOM_EPERM;
	return 0;
}

/*
 * Reads and writes, including through a descriptor passed from the pod, and
 * mmap. file_permission runs on every read and write on the node, so the
 * device comes from plain loads through the trusted file pointer and the
 * prefilter ends the check for files outside Phantom volumes.
 */
static __always_inline int phantom_lsm_file_access(struct file *file, __u32 kind)
{
	if (phantom_check_file(file, file->f_inode->i_sb->s_dev, 0, kind, false, false,
			       PHANTOM_ACTION_DENY) == PHANTOM_VERDICT_DENY)
		return -PHANTOM_EPERM;
	return 0;
}

#endif /* PHANTOM_LSM_HOOKS_H */
