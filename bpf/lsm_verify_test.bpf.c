// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Test-only programs that run the LSM hook bodies of lsm_hooks.h through
 * the verifier on kernels that refuse BPF LSM programs. Each is a BTF
 * tracepoint program whose tracepoint passes the same trusted pointer type
 * as the LSM hook. The tests load them and never attach them.
 */
#include "lsm_hooks.h"
#include <bpf/bpf_tracing.h>

char LICENSE[] SEC("license") = "Dual BSD/GPL";

SEC("tp_btf/sched_process_exec")
int BPF_PROG(phantom_verify_ptrace, struct task_struct *p, pid_t old_pid,
	     struct linux_binprm *bprm)
{
	phantom_lsm_ptrace(p, PHANTOM_PTRACE_MODE_ATTACH);
	return 0;
}

SEC("tp_btf/file_check_and_advance_wb_err")
int BPF_PROG(phantom_verify_file_open, struct file *file, errseq_t old)
{
	phantom_lsm_open(file);
	return 0;
}

SEC("tp_btf/file_check_and_advance_wb_err")
int BPF_PROG(phantom_verify_file_access, struct file *file, errseq_t old)
{
	phantom_lsm_file_access(file, PHANTOM_KIND_FILE_READ);
	return 0;
}
