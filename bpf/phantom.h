/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/*
 * Shared state and decision logic of Phantom's runtime-protection monitor.
 *
 * Both attach paths include this header. The BPF LSM programs
 * (monitor_lsm.bpf.c) can veto an access with -EPERM. The syscall tracepoint
 * programs (monitor_tracepoint.bpf.c) can only record an access or kill the
 * caller with SIGKILL after the syscall has started. The decision lives in
 * phantom_decide(), so both paths and the BPF_PROG_TEST_RUN program in
 * decision_test.bpf.c run the same code.
 *
 * A protected pod is identified by its pod-level cgroup v2 id, registered by
 * user space together with the cgroup's level in the hierarchy. A Phantom
 * volume is identified by the s_dev of its tmpfs superblock. Every volume is
 * a tmpfs mounted for one pod, so the device alone names the volume. It also
 * stays valid when a secret rotation swaps in new inodes.
 */
#ifndef PHANTOM_H
#define PHANTOM_H

#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_core_read.h>

#define PHANTOM_EPERM 1
#define PHANTOM_SIGKILL 9

/* include/linux/ptrace.h */
#define PHANTOM_PTRACE_MODE_ATTACH 0x02
#define PHANTOM_PTRACE_MODE_FSCREDS 0x08

/* include/uapi/linux/magic.h */
#define PHANTOM_PROC_SUPER_MAGIC 0x9fa0

/* include/linux/fs.h */
#define PHANTOM_MAY_WRITE 0x2

/* include/uapi/linux/stat.h */
#define PHANTOM_S_IFMT 00170000
#define PHANTOM_S_IFREG 0100000

/* Bit 7 of a task's exit code is set when the kernel wrote a core dump. */
#define PHANTOM_EXIT_CORE_DUMPED 0x80

/*
 * Maximum number of cgroup levels walked from a task's cgroup up to its
 * pod cgroup. Kubelet pod cgroups sit at level 2 to 4 and containers one
 * level below, so 16 leaves room for a custom --cgroup-root.
 */
#define PHANTOM_MAX_CGROUP_DEPTH 16

/* Size of the per-device prefilter in 64-bit words; a power of two. */
#define PHANTOM_VOLUME_FILTER_WORDS 64

#define PHANTOM_COMM_LEN 16
#define PHANTOM_NAME_LEN 128

enum phantom_mode {
	PHANTOM_MODE_AUDIT = 0,
	PHANTOM_MODE_ENFORCE = 1,
};

enum phantom_verdict {
	PHANTOM_VERDICT_IGNORE = 0, /* not a protected target: no record */
	PHANTOM_VERDICT_ALLOW = 1,  /* owning pod or the daemon: no record */
	PHANTOM_VERDICT_AUDIT = 2,  /* outsider in audit mode: record, allow */
	PHANTOM_VERDICT_DENY = 3,   /* outsider in enforce mode: record, deny */
};

enum phantom_kind {
	PHANTOM_KIND_PTRACE = 1,
	PHANTOM_KIND_PROCESS_VM = 2,
	PHANTOM_KIND_PROC_MEM = 3,
	PHANTOM_KIND_PROC_ENVIRON = 4,
	PHANTOM_KIND_FILE_OPEN = 5,
	PHANTOM_KIND_FILE_READ = 6,
	PHANTOM_KIND_FILE_MMAP = 7,
	PHANTOM_KIND_COREDUMP = 8,
	PHANTOM_KIND_FILE_WRITE = 9,
};

enum phantom_action {
	PHANTOM_ACTION_AUDIT = 1, /* recorded only */
	PHANTOM_ACTION_DENY = 2,  /* LSM hook returned -EPERM */
	PHANTOM_ACTION_KILL = 3,  /* caller sent SIGKILL */
};

/* Value of phantom_pods, keyed by the pod cgroup's v2 id. */
struct phantom_pod {
	__u32 mode;  /* enum phantom_mode */
	__u32 level; /* level of the pod cgroup; the root cgroup is level 0 */
};

/* Value of phantom_volumes, keyed by the kernel dev_t of the tmpfs. */
struct phantom_volume {
	__u64 pod_cgroup;
};

/* Record sent to user space through the phantom_events ring buffer. */
struct phantom_event {
	__u64 actor_cgroup;  /* cgroup v2 id of the acting task */
	__u64 pod_cgroup;    /* pod cgroup that owns the target */
	__u64 target_cgroup; /* cgroup v2 id of the target task, 0 for files */
	__u64 target_ino;    /* inode of the target file, 0 for processes */
	__u32 target_dev;    /* kernel dev_t of the target file's superblock */
	__u32 actor_pid;     /* thread group id of the acting task */
	__u32 actor_tid;
	__u32 target_pid;    /* thread group id of the target task */
	__u32 kind;          /* enum phantom_kind */
	__u32 action;        /* enum phantom_action */
	__u32 detail;        /* ptrace mode, ptrace request or exit code */
	__u32 pad;
	char actor_comm[PHANTOM_COMM_LEN];
	char target_comm[PHANTOM_COMM_LEN];
	char actor_cgroup_name[PHANTOM_NAME_LEN];
	char target_cgroup_name[PHANTOM_NAME_LEN];
	char file_name[PHANTOM_NAME_LEN];
};

/* Description of one access, filled by a hook before phantom_check(). */
struct phantom_access {
	__u64 pod_cgroup;
	struct task_struct *target; /* NULL for file accesses */
	struct file *file;          /* NULL for process accesses */
	__u32 kind;
	__u32 detail;
};

/* Thread group id of the Phantom daemon, set by the loader. */
const volatile __u32 phantom_daemon_tgid = 0;

/*
 * Prefilter over the registered volume devices, maintained by user space.
 * A clear bit proves that no volume has this device, so hot hooks skip the
 * hash lookup for nearly every file on the node.
 */
__u64 phantom_volume_filter[PHANTOM_VOLUME_FILTER_WORDS];

/* Events dropped because the ring buffer was full. */
__u64 phantom_lost_events;

/*
 * Counts open hook runs in the daemon while phantom_selftest_armed is set,
 * so the loader can prove the programs are attached and called: an LSM
 * program attaches even when the bpf LSM is inactive, and is then never
 * called. The flag keeps the check off the hot path the rest of the time.
 */
__u32 phantom_selftest_armed;
__u64 phantom_selftest_hits;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, struct phantom_pod);
} phantom_pods SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 4096);
	__type(key, __u32);
	__type(value, struct phantom_volume);
} phantom_volumes SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} phantom_events SEC(".maps");

/*
 * Keeps struct phantom_event in the object's BTF: local variables do not,
 * and bpf2go's -type flag generates the Go type from BTF.
 */
const struct phantom_event *phantom_unused_event __attribute__((unused));

/*
 * Decide what to do with an access to a target owned by pod_cgroup.
 *
 * actor_pod_cgroup is the acting task's ancestor cgroup at the pod's level
 * (0 when the actor sits above that level). attach is false for read-mode
 * checks, which runc exec, CNI plugins and /proc/<pid>/ns readers rely on.
 * Order matters only for cost: each test is cheaper than the next.
 */
static __always_inline enum phantom_verdict
phantom_decide(__u32 actor_tgid, __u64 actor_pod_cgroup, __u64 pod_cgroup,
	       const struct phantom_pod *pod, bool attach)
{
	if (!attach || !pod)
		return PHANTOM_VERDICT_IGNORE;
	if (actor_tgid == phantom_daemon_tgid)
		return PHANTOM_VERDICT_ALLOW;
	if (actor_pod_cgroup == pod_cgroup)
		return PHANTOM_VERDICT_ALLOW;
	if (pod->mode == PHANTOM_MODE_ENFORCE)
		return PHANTOM_VERDICT_DENY;
	return PHANTOM_VERDICT_AUDIT;
}

static __always_inline bool phantom_volume_maybe(__u32 dev)
{
	__u32 word = (dev >> 6) & (PHANTOM_VOLUME_FILTER_WORDS - 1);

	return phantom_volume_filter[word] & (1ULL << (dev & 63));
}

static __always_inline struct cgroup *phantom_task_cgroup(struct task_struct *task)
{
	return BPF_CORE_READ(task, cgroups, dfl_cgrp);
}

static __always_inline void phantom_cgroup_name(char *dst, struct cgroup *cg)
{
	const char *name = BPF_CORE_READ(cg, kn, name);

	if (name)
		bpf_probe_read_kernel_str(dst, PHANTOM_NAME_LEN, name);
}

/*
 * Find the registered pod whose cgroup is task's cgroup or one of its
 * ancestors. Returns the pod cgroup id, or 0 with *pod left NULL.
 */
static __always_inline __u64 phantom_task_pod(struct task_struct *task,
					      struct phantom_pod **pod)
{
	struct cgroup *cg = phantom_task_cgroup(task);

	for (int i = 0; i < PHANTOM_MAX_CGROUP_DEPTH && cg; i++) {
		__u64 id = BPF_CORE_READ(cg, kn, id);
		struct cgroup_subsys_state *parent;

		*pod = bpf_map_lookup_elem(&phantom_pods, &id);
		if (*pod)
			return id;
		/* The parent is the css embedded in the parent cgroup as self. */
		parent = BPF_CORE_READ(cg, self.parent);
		if (!parent)
			break;
		cg = (void *)parent - bpf_core_field_offset(struct cgroup, self);
	}
	*pod = NULL;
	return 0;
}

/* Fill in the record of an access and send it to user space. */
static __always_inline void phantom_emit(const struct phantom_access *a, __u32 action)
{
	struct task_struct *current_task = (struct task_struct *)bpf_get_current_task();
	struct task_struct *target;
	struct phantom_event *e;
	struct file *file;
	__u64 pid_tgid;

	e = bpf_ringbuf_reserve(&phantom_events, sizeof(*e), 0);
	if (!e) {
		__sync_fetch_and_add(&phantom_lost_events, 1);
		return;
	}
	__builtin_memset(e, 0, sizeof(*e));

	pid_tgid = bpf_get_current_pid_tgid();
	e->actor_pid = pid_tgid >> 32;
	e->actor_tid = (__u32)pid_tgid;
	e->actor_cgroup = bpf_get_current_cgroup_id();
	bpf_get_current_comm(e->actor_comm, sizeof(e->actor_comm));
	phantom_cgroup_name(e->actor_cgroup_name, phantom_task_cgroup(current_task));

	e->pod_cgroup = a->pod_cgroup;
	e->kind = a->kind;
	e->action = action;
	e->detail = a->detail;

	/*
	 * Copy the pointers out of struct phantom_access first: BPF_CORE_READ
	 * on a->target would ask for a CO-RE relocation of phantom_access,
	 * which the kernel's BTF does not have.
	 */
	target = a->target;
	file = a->file;
	if (target) {
		struct cgroup *cg = phantom_task_cgroup(target);

		e->target_pid = BPF_CORE_READ(target, tgid);
		e->target_cgroup = BPF_CORE_READ(cg, kn, id);
		BPF_CORE_READ_STR_INTO(&e->target_comm, target, comm);
		phantom_cgroup_name(e->target_cgroup_name, cg);
	}
	if (file) {
		struct inode *inode = BPF_CORE_READ(file, f_inode);
		const unsigned char *name = BPF_CORE_READ(file, f_path.dentry, d_name.name);

		e->target_ino = BPF_CORE_READ(inode, i_ino);
		e->target_dev = BPF_CORE_READ(inode, i_sb, s_dev);
		if (name)
			bpf_probe_read_kernel_str(e->file_name, sizeof(e->file_name), name);
	}

	bpf_ringbuf_submit(e, 0);
}

/*
 * Decide on an access and record it when the actor is an outsider.
 * deny_action is what the calling path does on PHANTOM_VERDICT_DENY.
 */
static __always_inline enum phantom_verdict
phantom_judge(const struct phantom_access *a, const struct phantom_pod *pod, bool attach,
	      __u32 actor_tgid, __u64 actor_pod_cgroup, __u32 deny_action)
{
	enum phantom_verdict verdict;

	verdict = phantom_decide(actor_tgid, actor_pod_cgroup, a->pod_cgroup, pod, attach);
	if (verdict == PHANTOM_VERDICT_AUDIT)
		phantom_emit(a, PHANTOM_ACTION_AUDIT);
	else if (verdict == PHANTOM_VERDICT_DENY)
		phantom_emit(a, deny_action);
	return verdict;
}

/* Judge an attach-mode access by the current task to a registered pod. */
static __always_inline enum phantom_verdict
phantom_check(const struct phantom_access *a, const struct phantom_pod *pod,
	      __u32 deny_action)
{
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	__u64 actor_pod = bpf_get_current_ancestor_cgroup_id(pod->level);

	return phantom_judge(a, pod, true, tgid, actor_pod, deny_action);
}

/* Count a hook run by the daemon; see phantom_selftest_hits. */
static __always_inline void phantom_selftest_mark(void)
{
	if (phantom_selftest_armed && (bpf_get_current_pid_tgid() >> 32) == phantom_daemon_tgid)
		__sync_fetch_and_add(&phantom_selftest_hits, 1);
}

/* Task whose /proc/<pid> directory contains the procfs inode. */
static __always_inline struct task_struct *phantom_proc_task(struct inode *inode)
{
	struct proc_inode *pi;
	struct hlist_node *first;
	struct pid *pid;

	pi = (void *)inode - bpf_core_field_offset(struct proc_inode, vfs_inode);
	pid = BPF_CORE_READ(pi, pid);
	if (!pid)
		return NULL;
	first = BPF_CORE_READ(pid, tasks[PIDTYPE_PID].first);
	if (!first)
		return NULL;
	return (void *)first - bpf_core_field_offset(struct task_struct, pid_links);
}

/* Compare a dentry name with a short literal, terminating NUL included. */
static __always_inline bool phantom_name_is(const char *name, const char *want, int len)
{
	char buf[8] = {};

	if (len > (int)sizeof(buf))
		return false;
	if (bpf_probe_read_kernel_str(buf, sizeof(buf), name) != len)
		return false;
	for (int i = 0; i < len; i++)
		if (buf[i] != want[i])
			return false;
	return true;
}

/*
 * Classify a procfs file: PHANTOM_KIND_PROC_MEM for /proc/<pid>/mem,
 * PHANTOM_KIND_PROC_ENVIRON for /proc/<pid>/environ (also under task/<tid>),
 * 0 otherwise. Only these two names are per-process files in procfs, and
 * only inodes under a /proc/<pid> directory carry a pid.
 */
static __always_inline __u32 phantom_proc_kind(struct file *file)
{
	const unsigned char *name = BPF_CORE_READ(file, f_path.dentry, d_name.name);

	if (!name)
		return 0;
	if (phantom_name_is((const char *)name, "mem", 4))
		return PHANTOM_KIND_PROC_MEM;
	if (phantom_name_is((const char *)name, "environ", 8))
		return PHANTOM_KIND_PROC_ENVIRON;
	return 0;
}

/*
 * Judge an access to an open file whose superblock has device dev and magic
 * number magic. Phantom volume files are matched by device first: a clear
 * bit in the prefilter ends the check for nearly every file on the node.
 * procfs files are matched by name when want_mem or want_environ allows the
 * kind; callers that allow neither may pass 0 as magic. The LSM path
 * handles /proc/<pid>/mem in ptrace_access_check instead.
 */
static __always_inline enum phantom_verdict
phantom_check_file(struct file *file, __u32 dev, unsigned long magic, __u32 kind,
		   bool want_mem, bool want_environ, __u32 deny_action)
{
	struct phantom_access a = { .file = file, .kind = kind };
	struct phantom_volume *vol;
	struct phantom_pod *pod;

	if (phantom_volume_maybe(dev)) {
		vol = bpf_map_lookup_elem(&phantom_volumes, &dev);
		if (vol) {
			/*
			 * Only file contents are secret. Listing the volume's
			 * directories (kubelet cleanup, an administrator's ls)
			 * and the ..data symlink stay allowed.
			 */
			umode_t mode = BPF_CORE_READ(file, f_inode, i_mode);

			if ((mode & PHANTOM_S_IFMT) != PHANTOM_S_IFREG)
				return PHANTOM_VERDICT_IGNORE;
			a.pod_cgroup = vol->pod_cgroup;
			pod = bpf_map_lookup_elem(&phantom_pods, &a.pod_cgroup);
			if (!pod)
				return PHANTOM_VERDICT_IGNORE;
			return phantom_check(&a, pod, deny_action);
		}
	}

	if ((!want_mem && !want_environ) || magic != PHANTOM_PROC_SUPER_MAGIC)
		return PHANTOM_VERDICT_IGNORE;

	a.kind = phantom_proc_kind(file);
	if ((a.kind == PHANTOM_KIND_PROC_MEM && want_mem) ||
	    (a.kind == PHANTOM_KIND_PROC_ENVIRON && want_environ)) {
		a.target = phantom_proc_task(BPF_CORE_READ(file, f_inode));
		if (!a.target)
			return PHANTOM_VERDICT_IGNORE;
		a.file = NULL;
		a.pod_cgroup = phantom_task_pod(a.target, &pod);
		if (!pod)
			return PHANTOM_VERDICT_IGNORE;
		return phantom_check(&a, pod, deny_action);
	}
	return PHANTOM_VERDICT_IGNORE;
}

/*
 * Record a core dump of a protected process. This runs at the exit of the
 * thread group leader, whose exit code carries the core-dumped bit once the
 * kernel has written the dump. No LSM hook can stop a dump, so this only
 * records it.
 */
static __always_inline void phantom_check_coredump(void)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task();
	struct phantom_access a = { .kind = PHANTOM_KIND_COREDUMP };
	struct phantom_pod *pod;
	int exit_code;

	exit_code = BPF_CORE_READ(task, exit_code);
	if (!(exit_code & PHANTOM_EXIT_CORE_DUMPED))
		return;
	if (BPF_CORE_READ(task, pid) != BPF_CORE_READ(task, tgid))
		return;

	a.pod_cgroup = phantom_task_pod(task, &pod);
	if (!pod)
		return;
	a.target = task;
	a.detail = exit_code;
	phantom_emit(&a, PHANTOM_ACTION_AUDIT);
}

#endif /* PHANTOM_H */
