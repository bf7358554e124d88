// Package keyring keeps a symmetric key in the Linux kernel keyring, so the
// key never touches a filesystem and outlives the process that created it.
//
// The key is a "user" key in the user keyring (@u) of the calling user.
// Since Linux 5.3 the user keyrings of a user namespace live in the
// namespace's keyring register, not in the user's processes, so the key
// stays until the namespace goes: for a daemon in the host's user namespace
// (a privileged DaemonSet), that is until the node reboots. A restarted
// daemon, or a new container of it, finds the key again even though its
// container runtime gives it a new session keyring. A reboot loses the key,
// which is the point: whatever was encrypted with it becomes unreadable.
//
// A process possesses a key only through its thread, process and session
// keyrings, and runc gives each container a new session keyring that does
// not link @u. So the package first links @u into the session keyring, as
// pam_keyinit does. The key's permissions grant everything to a possessor
// and only "view" to other processes of the same user. Any process of that
// user in the same user namespace that may call keyctl(2) can make the same
// link and read the key: root on the node can. Container runtimes block
// keyctl, add_key and request_key in their default seccomp profiles.
package keyring
