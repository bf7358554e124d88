package tmpfs

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"time"
)

const (
	// Source is the device name of every Phantom tmpfs. It appears in the
	// source field of /proc/self/mountinfo and distinguishes Phantom's
	// mounts from other tmpfs mounts.
	Source = "phantom"

	// DefaultFileMode is the mode of a written file whose File.Mode is zero.
	// Only the owner (root) and the volume's group may read the file.
	DefaultFileMode os.FileMode = 0o440

	// RootMode is the mode of the tmpfs root directory. Group members (the
	// pod's fsGroup) may list and traverse it but not create entries, so a
	// pod cannot plant files next to the ones Phantom manages.
	RootMode os.FileMode = 0o750

	// DirMode is the mode of the directories that Write creates.
	DirMode os.FileMode = 0o550

	// dataLink is the symlink that points at the current content directory.
	dataLink = "..data"

	// dataLinkTmp is the symlink created next to dataLink and renamed over
	// it to publish a new content directory.
	dataLinkTmp = "..data_tmp"

	// SupersededGrace is how long a replaced content directory stays in the
	// volume. A reader that resolved "..data" just before the swap is still
	// looking up names inside the old directory, and deleting it at once
	// would make that lookup fail with ENOENT. The grace covers a reader
	// that is descheduled in the middle of a path lookup, which takes
	// microseconds when it runs.
	SupersededGrace = 5 * time.Second

	// pageSize is the allocation unit of tmpfs on the architectures
	// Kubernetes nodes run (amd64, arm64 with 4 KiB pages). Larger pages only
	// make MinMountSize an underestimate of the slack a file needs.
	pageSize = 4096
)

var (
	// ErrForeignMount means the target path contains a mount that Phantom did
	// not create, so Phantom will neither mount over it nor unmount it.
	ErrForeignMount = errors.New("target contains a mount that is not a Phantom tmpfs")

	// ErrNotDirectory means the target path exists but is not a directory
	// (a regular file, a symlink or a device).
	ErrNotDirectory = errors.New("target is not a directory")

	// ErrNotMounted means the operation needs a Phantom tmpfs at the target
	// and there is none.
	ErrNotMounted = errors.New("target is not a Phantom tmpfs mount")

	// ErrNotTmpfs means Write was asked to write into a directory that is
	// not on a tmpfs. Write rejects it so secret bytes never reach a disk.
	ErrNotTmpfs = errors.New("target is not on a tmpfs")

	// ErrTooLarge means the files add up to more bytes than the limit.
	ErrTooLarge = errors.New("files exceed the size limit")

	// ErrInvalidPath means a file path breaks one of the rules of
	// ValidatePath or collides with another file path.
	ErrInvalidPath = errors.New("invalid file path")

	// ErrInvalidMode means a file mode has bits other than the nine
	// permission bits.
	ErrInvalidMode = errors.New("invalid file mode")

	// ErrInvalidOptions means MountOptions or WriteOptions hold a value out
	// of range.
	ErrInvalidOptions = errors.New("invalid options")
)

// MountOptions configures a Phantom tmpfs mount.
type MountOptions struct {
	// SizeBytes is the tmpfs size limit in bytes and must be positive. The
	// kernel rounds it up to whole pages. Old and new content coexist for a
	// while after each Write, so use MinMountSize to size it.
	SizeBytes int64

	// GID is the group of the tmpfs root directory, taken from the CSI
	// volume_mount_group (the pod's fsGroup). Nil leaves the group root.
	GID *int64

	// ReadOnly makes the mount point read-only whenever no write is in
	// progress. Mounter.WriteFiles makes it writable for the duration of a
	// write, so rotation keeps working.
	ReadOnly bool
}

// File is one file to place in a volume.
//
// File implements fmt.Formatter, slog.LogValuer and json.Marshaler so that
// printing, logging or encoding a File shows its path and mode but prints
// Data as "[redacted]".
type File struct {
	// Path is relative to the volume root and may contain subdirectories
	// ("tls/tls.crt"). It must pass ValidatePath.
	Path string

	// Data is the file content. It is secret.
	Data []byte

	// Mode is the permission bits of the file. Zero means
	// DefaultFileMode.
	Mode os.FileMode
}

// WriteOptions configures Write.
type WriteOptions struct {
	// GID is the group owner of the written files and directories. Nil
	// leaves the group of the writing process.
	GID *int64

	// MaxBytes is the maximum total size of all files in bytes and must be
	// positive.
	MaxBytes int64

	// Logger receives Debug records of the steps, naming paths only. Nil
	// discards them.
	Logger *slog.Logger
}

const redacted = "[redacted]"

// Format prints the file with its data replaced by "[redacted]", whatever
// the verb.
func (f File) Format(state fmt.State, verb rune) {
	fmt.Fprintf(state, "{Path:%q Mode:%#o Data:%s (%d bytes)}", f.Path, uint32(f.Mode), redacted, len(f.Data))
}

// LogValue logs the path, mode and size of the file, never its data.
func (f File) LogValue() slog.Value {
	return slog.GroupValue(
		slog.String("path", f.Path),
		slog.String("mode", fmt.Sprintf("%#o", uint32(f.Mode))),
		slog.Int("bytes", len(f.Data)),
		slog.String("data", redacted),
	)
}

// MarshalJSON encodes the path, mode and size of the file, never its data.
func (f File) MarshalJSON() ([]byte, error) {
	return json.Marshal(struct {
		Path  string `json:"path"`
		Mode  uint32 `json:"mode"`
		Bytes int    `json:"bytes"`
		Data  string `json:"data"`
	}{Path: f.Path, Mode: uint32(f.Mode), Bytes: len(f.Data), Data: redacted})
}

// MinMountSize returns the recommended MountOptions.SizeBytes for volumes
// whose content is up to maxBytes spread over up to maxFiles files. Tmpfs
// charges every file in whole pages, so a copy of the content takes up to
// maxBytes plus one page per file. The result has room for three copies: the
// content being written, the current one, and one replaced copy younger
// than SupersededGrace. When more replaced copies are that young and the
// tmpfs is full, Write removes them early, and only then can a reader in
// the middle of a lookup miss a file.
func MinMountSize(maxBytes int64, maxFiles int) int64 {
	if maxBytes < 0 {
		maxBytes = 0
	}
	if maxFiles < 0 {
		maxFiles = 0
	}
	return 3 * (maxBytes + int64(maxFiles)*pageSize)
}

// validateGID checks that a group id fits the kernel's 32-bit gid_t and is
// not the reserved value -1 (0xFFFFFFFF), which chown treats as "unchanged".
func validateGID(field string, gid *int64) error {
	if gid == nil {
		return nil
	}
	if *gid < 0 || *gid >= 1<<32-1 {
		return fmt.Errorf("%w: %s %d is out of range; use a group id from 0 to %d", ErrInvalidOptions, field, *gid, uint32(1<<32-2))
	}
	return nil
}

// discardLogger returns logger, or a logger that drops every record when
// logger is nil.
func discardLogger(logger *slog.Logger) *slog.Logger {
	if logger != nil {
		return logger
	}
	return slog.New(slog.DiscardHandler)
}
