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

/* Resolve a pid to a task; Linux 6.2 (pid) and 6.13 (vpid) or later. */
extern struct task_struct *bpf_task_from_vpid(s32 vpid) __ksym __weak;
extern struct task_struct *bpf_task_from_pid(s32 pid) __ksym __weak;
extern void bpf_task_release(struct task_struct *p) __ksym __weak;

/*
 * Set by the loader when the kernel lets tracepoint programs call the task
 * kfuncs above. Without them the ptrace and process_vm_* hooks cannot find
 * their target and stay inactive; the verifier drops their calls.
 */
const volatile bool phantom_task_kfuncs = false;

static __always_inline void phantom_enforce(enum phantom_verdict verdict)
{
	if (verdict == PHANTOM_VERDICT_DENY)
		bpf_send_signal(PHANTOM_SIGKILL);
}

/* Caller's pid namespace is the initial one, where vpid equals pid. */
static __always_inline bool phantom_in_init_pid_ns(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();

	return BPF_CORE_READ(task, thread_pid, level) == 0;
}

static __always_inline struct task_struct *phantom_task_from_vpid(s32 vpid)
{
	if (!phantom_task_kfuncs || vpid <= 0)
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

/*
 * Read-only cast of a kernel pointer to a BTF type; Linux 6.2 or later. The
 * first parameter lost its const in 6.9; the weak declaration leaves the
 * call out where the prototype does not match.
 */
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym __weak;

/*
 * Kernel-memory access level of the fd hooks, set by the loader to the
 * highest level the kernel accepts. Level 1 follows file->f_inode->i_sb
 * through bpf_rdonly_cast() to struct file. Level 2 also indexes the fd
 * table through bpf_rdonly_cast() to void (btf_id 0). Level 0 uses probe
 * reads only. The verifier drops the branches not taken, so each kernel
 * verifies only what it supports.
 */
const volatile __u32 phantom_fd_access = 0;

/*
 * Return the struct file behind descriptor fd of the current task, or NULL.
 * The fd table is reached with plain loads through the current task's BTF
 * pointer. Indexing it needs the void cast or one probe read.
 */
static __always_inline struct file *phantom_fd_file(int fd)
{
	struct task_struct *task = bpf_get_current_task_btf();
	struct files_struct *files = task->files;
	struct file *file = NULL;
	struct fdtable *fdt;
	struct file **fds;

	if (fd < 0 || !files)
		return NULL;
	fdt = files->fdt;
	if (!fdt || (unsigned int)fd >= fdt->max_fds)
		return NULL;
	if (phantom_fd_access >= 2) {
		fds = bpf_rdonly_cast(fdt->fd, 0);
		return fds[fd];
	}
	fds = fdt->fd;
	bpf_probe_read_kernel(&file, sizeof(file), &fds[fd]);
	return file;
}

/*
 * Judge an access through descriptor fd. At fd access level 2 the path from
 * descriptor to device number is plain loads only. Level 1 adds one probe
 * read, and level 0 takes four.
 */
static __always_inline void phantom_check_fd(int fd, __u32 kind, bool want_proc)
{
	struct file *file = phantom_fd_file(fd);
	unsigned long magic = 0;
	__u32 dev;

	if (!file)
		return;
	if (phantom_fd_access >= 1 && bpf_rdonly_cast) {
		struct file *f = bpf_rdonly_cast(file, bpf_core_type_id_kernel(struct file));
		struct super_block *sb = f->f_inode->i_sb;

		dev = sb->s_dev;
		if (want_proc)
			magic = sb->s_magic;
	} else {
		struct super_block *sb = BPF_CORE_READ(file, f_inode, i_sb);

		dev = BPF_CORE_READ(sb, s_dev);
		if (want_proc)
			magic = BPF_CORE_READ(sb, s_magic);
	}
	phantom_enforce(phantom_check_file(file, dev, magic, kind, want_proc, want_proc,
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
