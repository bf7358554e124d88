// Package tmpfs mounts the memory-backed volumes of the Phantom CSI node plugin
// and writes secret files into them atomically.
//
// Each volume is a tmpfs mounted directly at the pod's target path with the
// source name [Source], so Phantom's mounts can be distinguished from every
// other mount in /proc/self/mountinfo. [Mounter] mounts, unmounts, lists and toggles
// the read-only flag of those mounts. [Write] places files in a volume the way
// kubelet updates projected volumes: the content lives in a hidden directory
// named "..<timestamp>.<random>", the symlink "..data" points to it, and every
// top-level name is a symlink "name -> ..data/name". A new version is written
// into a fresh directory and published by renaming a new symlink over
// "..data". A reader that opens a file by its top-level name therefore gets
// a complete file of either the old or the new version. The replaced
// directory stays for [SupersededGrace], so a lookup that started before the
// swap still finds its file, unless the tmpfs is too full to keep it.
//
// Secret bytes never appear in logs or errors of this package: log records and
// error messages name paths, sizes and modes only, and [File] prints its data
// as "[redacted]".
package tmpfs
