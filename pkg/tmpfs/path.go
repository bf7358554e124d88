package tmpfs

import (
	"errors"
	"fmt"
	"os"
	"path"
	"slices"
	"strings"
)

const (
	// maxPathBytes is PATH_MAX on Linux. The volume's own path is not
	// counted: when the joined path is too long, the kernel rejects it and
	// Write returns that error.
	maxPathBytes = 4096

	// maxSegmentBytes is NAME_MAX on Linux.
	maxSegmentBytes = 255
)

// ValidatePath checks a file path of a volume and returns an error wrapping
// ErrInvalidPath that names the broken rule and the fix.
//
// A valid path is relative and non-empty, at most 4096 bytes long, and made of
// segments separated by '/'. Each segment is 1 to 255 bytes of ASCII letters,
// digits, '.', '_' and '-', and is neither "." nor "..". No segment may start
// with "..", because such names are reserved for the "..data" symlink and the
// content directories.
func ValidatePath(p string) error {
	switch {
	case p == "":
		return invalidPath(p, "path is empty; give a file name such as \"password\"")
	case len(p) > maxPathBytes:
		return invalidPath(p, fmt.Sprintf("path is %d bytes long, above the maximum of %d; shorten it", len(p), maxPathBytes))
	case strings.HasPrefix(p, "/"):
		return invalidPath(p, "path is absolute; remove the leading '/' so it is relative to the volume root")
	}

	for segment := range strings.SplitSeq(p, "/") {
		if err := validateSegment(p, segment); err != nil {
			return err
		}
	}
	return nil
}

// validateSegment checks one '/'-separated segment of the path p.
func validateSegment(p, segment string) error {
	switch {
	case segment == "":
		return invalidPath(p, "path has an empty segment (\"//\" or a trailing '/'); remove the extra '/'")
	case segment == ".":
		return invalidPath(p, "segment \".\" is not allowed; remove it")
	case segment == "..":
		return invalidPath(p, "segment \"..\" is not allowed; name the file relative to the volume root without \"..\"")
	case strings.HasPrefix(segment, ".."):
		return invalidPath(p, fmt.Sprintf("segment %q starts with \"..\", which is reserved for Phantom's own entries; rename it", segment))
	case len(segment) > maxSegmentBytes:
		return invalidPath(p, fmt.Sprintf("segment of %d bytes is above the maximum of %d; shorten it", len(segment), maxSegmentBytes))
	}

	for _, r := range segment {
		if !isNameRune(r) {
			return invalidPath(p, fmt.Sprintf("character %q is not allowed; use only ASCII letters, digits, '.', '_' and '-'", r))
		}
	}
	return nil
}

func isNameRune(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '.' || r == '_' || r == '-'
}

func invalidPath(p, reason string) error {
	return fmt.Errorf("%w %q: %s", ErrInvalidPath, p, reason)
}

// plannedFile is a validated File with its mode resolved.
type plannedFile struct {
	path string
	data []byte
	mode os.FileMode
}

// writePlan is the validated content of one Write.
type writePlan struct {
	// files is sorted by path.
	files []plannedFile
	// dirs lists every subdirectory, parents before children.
	dirs []string
	// topNames lists the distinct first segments of all paths, sorted.
	topNames []string
	// totalBytes is the sum of the file sizes.
	totalBytes int64
}

// planWrite validates files and the size limit and returns them as a plan.
// It reports every invalid file at once, joined with errors.Join.
func planWrite(files []File, maxBytes int64) (writePlan, error) {
	if maxBytes <= 0 {
		return writePlan{}, fmt.Errorf("%w: MaxBytes %d must be positive; set it to the volume's content limit", ErrInvalidOptions, maxBytes)
	}

	var plan writePlan
	var errs []error
	for _, f := range files {
		if err := ValidatePath(f.Path); err != nil {
			errs = append(errs, err)
			continue
		}
		mode, err := resolveMode(f)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		plan.files = append(plan.files, plannedFile{path: f.Path, data: f.Data, mode: mode})
		plan.totalBytes += int64(len(f.Data))
	}
	errs = append(errs, checkCollisions(plan.files)...)
	if err := errors.Join(errs...); err != nil {
		return writePlan{}, err
	}

	if plan.totalBytes > maxBytes {
		return writePlan{}, fmt.Errorf("%w: %d files total %d bytes, above the limit of %d bytes; remove files or raise the limit", ErrTooLarge, len(plan.files), plan.totalBytes, maxBytes)
	}

	slices.SortFunc(plan.files, func(a, b plannedFile) int { return strings.Compare(a.path, b.path) })
	plan.dirs, plan.topNames = collectDirs(plan.files)
	return plan, nil
}

func resolveMode(f File) (os.FileMode, error) {
	if f.Mode == 0 {
		return DefaultFileMode, nil
	}
	if f.Mode&^os.ModePerm != 0 {
		return 0, fmt.Errorf("%w %#o for %q: only permission bits (0 to 0777) are allowed; drop setuid, setgid, sticky and type bits", ErrInvalidMode, uint32(f.Mode), f.Path)
	}
	return f.Mode, nil
}

// checkCollisions reports paths listed twice and paths that would have to be
// a file and a directory at once ("a" next to "a/b").
func checkCollisions(files []plannedFile) []error {
	seen := make(map[string]bool, len(files))
	var errs []error
	for _, f := range files {
		if seen[f.path] {
			errs = append(errs, invalidPath(f.path, "path is listed more than once; keep one entry"))
			continue
		}
		seen[f.path] = true
	}

	for _, f := range files {
		for dir := path.Dir(f.path); dir != "."; dir = path.Dir(dir) {
			if seen[dir] {
				errs = append(errs, invalidPath(f.path, fmt.Sprintf("path needs %q as a directory, but %q is also a file; rename one of them", dir, dir)))
				break
			}
		}
	}
	return errs
}

// collectDirs returns every directory the files need, parents before
// children, and the distinct top-level names.
func collectDirs(files []plannedFile) (dirs, topNames []string) {
	dirSet := map[string]bool{}
	topSet := map[string]bool{}
	for _, f := range files {
		top, _, _ := strings.Cut(f.path, "/")
		topSet[top] = true
		for dir := path.Dir(f.path); dir != "."; dir = path.Dir(dir) {
			dirSet[dir] = true
		}
	}

	for dir := range dirSet {
		dirs = append(dirs, dir)
	}
	// Sorting by depth first puts every parent before its children.
	slices.SortFunc(dirs, func(a, b string) int {
		if d := strings.Count(a, "/") - strings.Count(b, "/"); d != 0 {
			return d
		}
		return strings.Compare(a, b)
	})

	for name := range topSet {
		topNames = append(topNames, name)
	}
	slices.Sort(topNames)
	return dirs, topNames
}
