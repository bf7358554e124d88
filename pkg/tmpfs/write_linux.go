package tmpfs

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// Write writes files into target, the root directory of a tmpfs, and reports
// whether the visible content changed.
//
// Write first validates every path and mode and the total size against
// opts.MaxBytes, and touches nothing when one is invalid. When the files,
// their modes and their group equal the current content, it changes nothing
// and returns false. Otherwise it writes all files into a new directory
// "..<timestamp>.<random>", links each new top-level name to
// "..data/<name>", publishes the directory by renaming a symlink over
// "..data", and removes the names that are gone. Files get mode 0440 unless
// File.Mode is set, directories 0550, and both the group opts.GID.
//
// The replaced directory stays for SupersededGrace, so a reader in the
// middle of a path lookup still finds it. Each Write removes the replaced
// directories whose grace has passed, and Mounter.WriteFiles also removes
// them after the grace without another write. When the tmpfs is too full to
// write the new content, Write removes replaced directories early.
//
// A crash at any step leaves the old or the new content complete behind
// "..data", and a Write after SupersededGrace removes what the crash left
// over. When Write
// fails before publishing, it removes the new directory and the old content
// stays. When only the cleanup after publishing fails, it returns true with
// the error.
//
// Write rejects a target that is not a directory on a tmpfs, so secret bytes
// never reach a disk. Calls for the same target must not run concurrently:
// Mounter.WriteFiles serializes them.
func Write(target string, files []File, opts WriteOptions) (bool, error) {
	return write(target, files, opts, SupersededGrace)
}

// write is Write with the grace period for the replaced directory as a
// parameter.
func write(target string, files []File, opts WriteOptions, grace time.Duration) (bool, error) {
	plan, err := planWrite(files, opts.MaxBytes)
	if err != nil {
		return false, err
	}
	if err := validateGID("WriteOptions.GID", opts.GID); err != nil {
		return false, err
	}
	if err := checkTmpfs(target); err != nil {
		return false, err
	}

	w := &writer{
		target: target,
		plan:   plan,
		gid:    -1,
		grace:  grace,
		log:    discardLogger(opts.Logger).With(keyTarget, target),
	}
	if opts.GID != nil {
		w.gid = int(*opts.GID)
	}
	return w.write()
}

// writer carries the state of one Write.
type writer struct {
	target string
	plan   writePlan
	// gid is the group for new files and directories, -1 to keep the
	// process's group.
	gid int
	// grace is how long the replaced content directory stays.
	grace time.Duration
	log   *slog.Logger
}

func (w *writer) write() (bool, error) {
	current, err := currentDir(w.target)
	if err != nil {
		return false, err
	}
	if err := w.removeStale(); err != nil {
		return false, err
	}

	if current != "" && w.sameContent(current) {
		w.log.Debug("content unchanged", keyFiles, len(w.plan.files))
		_, err := w.createNames()
		return false, errors.Join(err, w.removeStaleNames())
	}

	next, err := w.writeNewDataDir()
	if err != nil {
		return false, err
	}
	// Links for new names are created before publishing, so every name
	// resolves as soon as "..data" points at the new directory. Until then
	// a new name is a dangling link, which reads like a missing file.
	created, err := w.createNames()
	if err == nil {
		err = w.publish(next)
	}
	if err != nil {
		return false, errors.Join(err, w.rollback(next, created))
	}

	// The new content is visible from here on. What fails below leaves
	// unused entries that the next Write removes.
	cleanupErr := w.removeStaleNames()
	if current != "" {
		cleanupErr = errors.Join(cleanupErr, w.markReplaced(current))
	}
	return true, errors.Join(cleanupErr, w.removeStale())
}

// writeNewDataDir runs writeDataDir. When the tmpfs is full and replaced
// directories are still within their grace, it removes them and tries once
// more, because new content matters more than readers that are in the
// middle of a lookup in old content.
func (w *writer) writeNewDataDir() (string, error) {
	next, err := w.writeDataDir()
	if !errors.Is(err, unix.ENOSPC) {
		return next, err
	}

	removed, pruneErr := w.removeStaleWithGrace(0)
	if pruneErr != nil || removed == 0 {
		return "", errors.Join(err, pruneErr)
	}
	w.log.Warn("tmpfs is full, so replaced content was removed before its grace period ended and readers in the middle of a lookup may miss a file; size the volume with MinMountSize",
		keyCount, removed, keyBytes, w.plan.totalBytes)
	return w.writeDataDir()
}

// markReplaced sets the modification time of the replaced directory name to
// now, which starts its grace period in staleEntries.
func (w *writer) markReplaced(name string) error {
	now := time.Now()
	if err := os.Chtimes(filepath.Join(w.target, name), now, now); err != nil {
		return fmt.Errorf("mark %s in %s as replaced: %w", name, w.target, err)
	}
	return nil
}

// removeStale removes the reserved entries that no reader needs any more.
func (w *writer) removeStale() error {
	_, err := w.removeStaleWithGrace(w.grace)
	return err
}

// removeStaleWithGrace removes the entries that staleEntries lists for
// grace and returns how many it removed.
func (w *writer) removeStaleWithGrace(grace time.Duration) (int, error) {
	stale, err := staleEntries(w.target, grace, time.Now())
	if err != nil {
		return 0, err
	}
	for i, name := range stale {
		if err := w.removeEntry(name); err != nil {
			return i, err
		}
		w.log.Debug("removed stale entry", keyName, name)
	}
	return len(stale), nil
}

// sameContent reports whether the directory current contains exactly the
// planned files with the planned modes and group. Any read error counts as a
// difference, so the content gets rewritten.
func (w *writer) sameContent(current string) bool {
	wantFiles := make(map[string]plannedFile, len(w.plan.files))
	for _, f := range w.plan.files {
		wantFiles[f.path] = f
	}
	wantDirs := make(map[string]bool, len(w.plan.dirs))
	for _, d := range w.plan.dirs {
		wantDirs[d] = true
	}
	wantGID := w.gid
	if wantGID < 0 {
		wantGID = os.Getegid()
	}

	root := filepath.Join(w.target, current)
	matched := 0
	err := filepath.WalkDir(root, func(p string, entry fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == "." {
			return err
		}
		if entry.IsDir() {
			if !wantDirs[rel] {
				return errContentDiffers
			}
			return nil
		}
		want, ok := wantFiles[rel]
		if !ok || !fileMatches(p, want, wantGID) {
			return errContentDiffers
		}
		matched++
		return nil
	})
	return err == nil && matched == len(w.plan.files)
}

// errContentDiffers stops the walk of sameContent at the first difference.
var errContentDiffers = errors.New("content differs")

// fileMatches reports whether the regular file at p has the planned mode,
// group and data.
func fileMatches(p string, want plannedFile, wantGID int) bool {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return false
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG || os.FileMode(st.Mode)&os.ModePerm != want.mode ||
		int(st.Gid) != wantGID || st.Size != int64(len(want.data)) {
		return false
	}
	data, err := os.ReadFile(p)
	return err == nil && bytes.Equal(data, want.data)
}

// writeDataDir writes all planned files into a new content directory and
// returns its name. On failure it removes the directory again.
func (w *writer) writeDataDir() (string, error) {
	prefix := ".." + time.Now().UTC().Format("2006_01_02_15_04_05.000000000") + "."
	dir, err := os.MkdirTemp(w.target, prefix)
	if err != nil {
		return "", fmt.Errorf("create content directory in %s: %w", w.target, err)
	}
	name := filepath.Base(dir)

	if err := w.fillDataDir(dir); err != nil {
		return "", errors.Join(err, w.removeEntry(name))
	}
	w.log.Debug("wrote content directory", keyDir, name, keyFiles, len(w.plan.files), keyBytes, w.plan.totalBytes)
	return name, nil
}

func (w *writer) fillDataDir(dir string) error {
	// Directories stay writable by the owner until all files are in, then
	// get their final mode, children before parents.
	for _, d := range w.plan.dirs {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			return fmt.Errorf("create directory %s: %w", d, err)
		}
	}
	for _, f := range w.plan.files {
		if err := w.writeFile(filepath.Join(dir, f.path), f); err != nil {
			return fmt.Errorf("write file %s: %w", f.path, err)
		}
	}
	for i := len(w.plan.dirs) - 1; i >= 0; i-- {
		if err := w.setOwnerAndMode(filepath.Join(dir, w.plan.dirs[i]), DirMode); err != nil {
			return err
		}
	}
	return w.setOwnerAndMode(dir, DirMode)
}

func (w *writer) writeFile(p string, f plannedFile) error {
	file, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|unix.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	_, err = file.Write(f.data)
	if err == nil && w.gid >= 0 {
		err = file.Chown(-1, w.gid)
	}
	if err == nil {
		err = file.Chmod(f.mode)
	}
	return errors.Join(err, file.Close())
}

func (w *writer) setOwnerAndMode(p string, mode os.FileMode) error {
	if w.gid >= 0 {
		if err := os.Lchown(p, -1, w.gid); err != nil {
			return fmt.Errorf("set group of %s: %w", p, err)
		}
	}
	if err := os.Chmod(p, mode); err != nil {
		return fmt.Errorf("set mode of %s: %w", p, err)
	}
	return nil
}

// createNames creates the link "name -> ..data/name" for each top-level
// name that has none yet and returns the names it created. It fails when a
// name is taken by an entry other than that link.
func (w *writer) createNames() ([]string, error) {
	var created []string
	for _, name := range w.plan.topNames {
		p := filepath.Join(w.target, name)
		dest, err := os.Readlink(p)
		if err == nil && dest == linkDest(name) {
			continue
		}
		switch {
		case err == nil:
			return created, fmt.Errorf("link top-level name %s in %s: a link to %q has the name; remove it", name, w.target, dest)
		case errors.Is(err, unix.EINVAL):
			return created, fmt.Errorf("link top-level name %s in %s: an entry that is not a link has the name; remove it", name, w.target)
		case !errors.Is(err, fs.ErrNotExist):
			return created, fmt.Errorf("link top-level name %s in %s: %w", name, w.target, err)
		}

		if err := os.Symlink(linkDest(name), p); err != nil {
			return created, fmt.Errorf("link top-level name %s in %s: %w", name, w.target, err)
		}
		created = append(created, name)
	}
	return created, nil
}

// publish points "..data" at the content directory next by renaming a new
// link over it, which replaces the link in one step: a reader sees the old
// or the new link, never none. removeStale has deleted any "..data_tmp"
// that a crash left.
func (w *writer) publish(next string) error {
	tmp := filepath.Join(w.target, dataLinkTmp)
	if err := os.Symlink(next, tmp); err != nil {
		return fmt.Errorf("create link %s in %s: %w", dataLinkTmp, w.target, err)
	}
	if err := os.Rename(tmp, filepath.Join(w.target, dataLink)); err != nil {
		return fmt.Errorf("rename %s over %s in %s: %w", dataLinkTmp, dataLink, w.target, err)
	}
	w.log.Debug("published content directory", keyDir, next)
	return nil
}

// rollback removes what a Write created before it failed to publish.
func (w *writer) rollback(next string, createdNames []string) error {
	errs := []error{w.removeEntry(next), w.removeEntry(dataLinkTmp)}
	for _, name := range createdNames {
		errs = append(errs, w.removeEntry(name))
	}
	w.log.Debug("removed unpublished content directory", keyDir, next)
	return errors.Join(errs...)
}

// removeStaleNames removes the top-level links whose names are not in the
// plan. It keeps entries that are not Phantom links and logs them.
func (w *writer) removeStaleNames() error {
	keep := make(map[string]bool, len(w.plan.topNames))
	for _, name := range w.plan.topNames {
		keep[name] = true
	}

	entries, err := os.ReadDir(w.target)
	if err != nil {
		return fmt.Errorf("list %s: %w", w.target, err)
	}
	var errs []error
	for _, entry := range entries {
		name := entry.Name()
		if isReservedName(name) || keep[name] {
			continue
		}
		dest, err := os.Readlink(filepath.Join(w.target, name))
		if err != nil || dest != linkDest(name) {
			w.log.Warn("volume root contains an entry that Phantom did not create, leaving it in place", keyName, name)
			continue
		}
		if err := w.removeEntry(name); err != nil {
			errs = append(errs, err)
			continue
		}
		w.log.Debug("removed stale top-level name", keyName, name)
	}
	return errors.Join(errs...)
}

// removeEntry removes the entry name of the volume root and everything
// below it. A missing entry is not an error.
func (w *writer) removeEntry(name string) error {
	// A name with a separator or a dot entry could reach outside the volume.
	if name == "" || name == "." || name == ".." || strings.Contains(name, "/") {
		return fmt.Errorf("remove %q from %s: not a name of an entry in the volume root", name, w.target)
	}
	if err := os.RemoveAll(filepath.Join(w.target, name)); err != nil {
		return fmt.Errorf("remove %s from %s: %w", name, w.target, err)
	}
	return nil
}

// checkTmpfs returns an error unless target is a directory, not a symlink,
// on a tmpfs.
func checkTmpfs(target string) error {
	info, err := os.Lstat(target)
	if err != nil {
		return fmt.Errorf("write files to %s: %w", target, err)
	}
	if !info.IsDir() {
		return fmt.Errorf("write files to %s: %w (file type %s)", target, ErrNotDirectory, info.Mode().Type())
	}

	var st unix.Statfs_t
	if err := unix.Statfs(target, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", target, err)
	}
	if st.Type != unix.TMPFS_MAGIC {
		return fmt.Errorf("write files to %s: %w (filesystem magic %#x); mount a Phantom tmpfs there first", target, ErrNotTmpfs, st.Type)
	}
	return nil
}

// isReservedName reports whether a root entry belongs to the write protocol
// ("..data", "..data_tmp" and the content directories) rather than being a
// user-visible name. ValidatePath rejects such names for files.
func isReservedName(name string) bool {
	return strings.HasPrefix(name, "..")
}

// isContentDirName reports whether name can be a content directory created
// by writeDataDir: a single reserved name other than the protocol's links.
func isContentDirName(name string) bool {
	switch name {
	case "..", dataLink, dataLinkTmp:
		return false
	}
	return isReservedName(name) && !strings.Contains(name, "/")
}

func linkDest(name string) string {
	return dataLink + "/" + name
}
