// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * Syscall tracepoint path of the runtime-protection monitor, used where BPF
 * LSM programs cannot be loaded. A tracepoint cannot veto a syscall: in
 * enforce mode the caller gets SIGKILL, which takes effect when it returns
 * to user space. The syscall itself has already run by then, so memory the
 * caller shares with another process may still receive what it read.
 */
#include "phantom.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* include/uapi/linux/ptrace.h */
#define PHANTOM_PTRACE_ATTACH 16
#define PHANTOM_PTRACE_SEIZE 0x4206

/* Resolve a pid of the caller's pid namespace; needs Linux 6.2 or later. */
extern struct task_struct *bpf_task_from_vpid(s32 vpid) __ksym __weak;
extern struct task_struct *bpf_task_from_pid(s32 pid) __ksym __weak;
extern void bpf_task_release(struct task_struct *p) __ksym __weak;

static __always_inline void phantom_enforce(enum phantom_verdict verdict)
{
	if (verdict == PHANTOM_VERDICT_DENY)
		bpf_send_signal(PHANTOM_SIGKILL);
}

/* Caller's pid namespace is the initial one, where vpid equals pid. */
static __always_inline bool phantom_in_init_pid_ns(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	return BPF_CORE_READ(task, nsproxy, pid_ns_for_children, level) == 0;
}

static __always_inline struct task_struct *phantom_task_from_vpid(s32 vpid)
{
	if (vpid <= 0)
		return NULL;
	if (bpf_task_from_vpid)
		return bpf_task_from_vpid(vpid);
	if (bpf_task_from_pid && phantom_in_init_pid_ns())
		return bpf_task_from_pid(vpid);
	return NULL;
}

/* Judge an access to the process vpid: ptrace attach or process_vm_*. */
static __always_inline void phantom_check_pid(s32 vpid, __u32 kind, __u32 detail)
{
	struct phantom_access a = { .kind = kind, .detail = detail };
	struct task_struct *task;
	struct phantom_pod *pod;

	task = phantom_task_from_vpid(vpid);
	if (!task)
		return;
	a.target = task;
	a.pod_cgroup = phantom_task_pod(task, &pod);
	if (pod)
		phantom_enforce(phantom_check(&a, pod, PHANTOM_ACTION_KILL));
	bpf_task_release(task);
}

/* The struct file behind descriptor fd of the current task, or NULL. */
static __always_inline struct file *phantom_fd_file(int fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	struct file **fds;
	struct file *file = NULL;

	if (fd < 0 || !fdt || (unsigned int)fd >= BPF_CORE_READ(fdt, max_fds))
		return NULL;
	fds = BPF_CORE_READ(fdt, fd);
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	return file;
}

static __always_inline void phantom_check_fd(int fd, __u32 kind, bool want_proc)
{
	struct file *file = phantom_fd_file(fd);

	if (file)
		phantom_enforce(phantom_check_file(file, kind, want_proc, want_proc,
						   PHANTOM_ACTION_KILL));
}

SEC("tracepoint/syscalls/sys_enter_ptrace")
int phantom_tp_ptrace(struct trace_event_raw_sys_enter *ctx)
{
	long request = ctx->args[0];

	if (request == PHANTOM_PTRACE_ATTACH || request == PHANTOM_PTRACE_SEIZE)
		phantom_check_pid((s32)ctx->args[1], PHANTOM_KIND_PTRACE, request);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_process_vm_readv")
int phantom_tp_process_vm_readv(struct trace_event_raw_sys_enter *ctx)
{
	phantom_check_pid((s32)ctx->args[0], PHANTOM_KIND_PROCESS_VM, 0);
	return 0;
}

SEC("tracepoint/syscalls/sys_enter_process_vm_writev")
int phantom_tp_process_vm_writev(struct trace_event_raw_sys_enter *ctx)
{
	phantom_check_pid((s32)ctx->args[0], PHANTOM_KIND_PROCESS_VM, 1);
	return 0;
}

/*
 * Opens are judged at syscall exit, on the struct file the new descriptor
 * names: no path parsing, so relative paths, symlinks and /proc/<pid>/root
 * resolve to the same device and inode.
 */
static __always_inline void phantom_open_exit(struct trace_event_raw_sys_exit *ctx)
{
	long fd = ctx->ret;

	phantom_selftest_mark();
	if (fd >= 0)
		phantom_check_fd((int)fd, PHANTOM_KIND_FILE_OPEN, true);
}

SEC("tracepoint/syscalls/sys_exit_openat")
int phantom_tp_openat(struct trace_event_raw_sys_exit *ctx)
{
	phantom_open_exit(ctx);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_openat2")
int phantom_tp_openat2(struct trace_event_raw_sys_exit *ctx)
{
	phantom_open_exit(ctx);
	return 0;
}

/* open(2) and creat(2) exist on x86-64 but not on arm64. */
SEC("tracepoint/syscalls/sys_exit_open")
int phantom_tp_open(struct trace_event_raw_sys_exit *ctx)
{
	phantom_open_exit(ctx);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_creat")
int phantom_tp_creat(struct trace_event_raw_sys_exit *ctx)
{
	phantom_open_exit(ctx);
	return 0;
}

SEC("tracepoint/syscalls/sys_exit_open_by_handle_at")
int phantom_tp_open_by_handle_at(struct trace_event_raw_sys_exit *ctx)
{
	phantom_open_exit(ctx);
	return 0;
}

/*
 * Reads are judged at syscall entry on the descriptor's file, which also
 * catches descriptors passed from the pod over a Unix socket.
 */
#define PHANTOM_READ_HOOK(syscall, fd_arg, kind)                                 \
	SEC("tracepoint/syscalls/sys_enter_" #syscall)                           \
	int phantom_tp_##syscall(struct trace_event_raw_sys_enter *ctx)          \
	{                                                                        \
		phantom_check_fd((int)ctx->args[fd_arg], kind, false);          \
		return 0;                                                        \
	}

PHANTOM_READ_HOOK(read, 0, PHANTOM_KIND_FILE_READ)
PHANTOM_READ_HOOK(readv, 0, PHANTOM_KIND_FILE_READ)
PHANTOM_READ_HOOK(pread64, 0, PHANTOM_KIND_FILE_READ)
PHANTOM_READ_HOOK(preadv, 0, PHANTOM_KIND_FILE_READ)
PHANTOM_READ_HOOK(preadv2, 0, PHANTOM_KIND_FILE_READ)
PHANTOM_READ_HOOK(sendfile64, 1, PHANTOM_KIND_FILE_READ)
PHANTOM_READ_HOOK(splice, 0, PHANTOM_KIND_FILE_READ)
PHANTOM_READ_HOOK(copy_file_range, 0, PHANTOM_KIND_FILE_READ)
PHANTOM_READ_HOOK(mmap, 4, PHANTOM_KIND_FILE_MMAP)

SEC("raw_tracepoint/sched_process_exit")
int phantom_tp_coredump(struct bpf_raw_tracepoint_args *ctx)
{
	phantom_check_coredump();
	return 0;
}
