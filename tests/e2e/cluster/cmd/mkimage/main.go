// Command mkimage writes a single-layer container image, assembled from host
// files, as an OCI image layout tarball for `ctr images import`. The
// end-to-end cluster uses it to package static binaries as images because
// it has no registry and no Docker engine.
//
// Example:
//
//	mkimage -name phantom/pause:e2e -o pause.tar -add /pause=./pause -entrypoint /pause
package main

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/phantom-sec/phantom/tests/e2e/cluster/ociarchive"
)

// listFlag collects the values of a flag that may be repeated.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, " ") }

func (l *listFlag) Set(v string) error {
	*l = append(*l, v)
	return nil
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintf(os.Stderr, "mkimage: %v\n", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fset := flag.NewFlagSet("mkimage", flag.ContinueOnError)
	var (
		name       = fset.String("name", "", "image reference, such as phantom/busybox:e2e (required)")
		output     = fset.String("o", "", "path of the tarball to write (required)")
		workdir    = fset.String("workdir", "", "working directory of the image's process")
		user       = fset.String("user", "", "user of the image's process, as UID[:GID]")
		adds       listFlag
		symlinks   listFlag
		dirs       listFlag
		entrypoint listFlag
		cmd        listFlag
		env        listFlag
	)
	fset.Var(&adds, "add", "DEST=SRC[:MODE]: copy host file SRC to absolute path DEST, with octal MODE or SRC's permissions (repeatable)")
	fset.Var(&symlinks, "symlink", "DEST=TARGET: symbolic link at absolute path DEST pointing to TARGET (repeatable)")
	fset.Var(&dirs, "dir", "DEST: empty directory at absolute path DEST, mode 0755 (repeatable)")
	fset.Var(&entrypoint, "entrypoint", "one element of the entrypoint (repeat for each argument)")
	fset.Var(&cmd, "cmd", "one element of the default command (repeat for each argument)")
	fset.Var(&env, "env", "KEY=VALUE environment variable (repeatable; default is a PATH of the usual binary directories)")
	if err := fset.Parse(args); err != nil {
		return err
	}

	var problems []error
	if *name == "" {
		problems = append(problems, errors.New("-name is required"))
	}
	if *output == "" {
		problems = append(problems, errors.New("-o is required"))
	}
	if fset.NArg() > 0 {
		problems = append(problems, fmt.Errorf("unexpected arguments %q; every input is a flag", fset.Args()))
	}
	entries, err := parseEntries(adds, symlinks, dirs)
	if err != nil {
		problems = append(problems, err)
	}
	for _, kv := range env {
		if !strings.Contains(kv, "=") {
			problems = append(problems, fmt.Errorf("-env %q is not KEY=VALUE", kv))
		}
	}
	if err := errors.Join(problems...); err != nil {
		return err
	}

	img := ociarchive.Image{
		Name:       *name,
		Entries:    entries,
		Entrypoint: entrypoint,
		Cmd:        cmd,
		Env:        env,
		WorkingDir: *workdir,
		User:       *user,
	}
	return writeArchive(*output, img)
}

func parseEntries(adds, symlinks, dirs listFlag) ([]ociarchive.Entry, error) {
	var entries []ociarchive.Entry
	var problems []error
	for _, a := range adds {
		dest, src, ok := strings.Cut(a, "=")
		if !ok || dest == "" || src == "" {
			problems = append(problems, fmt.Errorf("-add %q is not DEST=SRC[:MODE]", a))
			continue
		}
		entry := ociarchive.Entry{Path: dest, Source: src}
		if i := strings.LastIndex(src, ":"); i >= 0 {
			mode, err := strconv.ParseUint(src[i+1:], 8, 32)
			if err != nil {
				problems = append(problems, fmt.Errorf("-add %q: mode %q is not an octal number such as 0755", a, src[i+1:]))
				continue
			}
			entry.Source = src[:i]
			entry.Mode = fs.FileMode(mode)
		}
		entries = append(entries, entry)
	}
	for _, s := range symlinks {
		dest, target, ok := strings.Cut(s, "=")
		if !ok || dest == "" || target == "" {
			problems = append(problems, fmt.Errorf("-symlink %q is not DEST=TARGET", s))
			continue
		}
		entries = append(entries, ociarchive.Entry{Path: dest, Linkname: target})
	}
	for _, d := range dirs {
		entries = append(entries, ociarchive.Entry{Path: d})
	}
	return entries, errors.Join(problems...)
}

// writeArchive writes the image beside output and renames it into place, so
// a failed run never leaves a truncated tarball under the final name.
func writeArchive(output string, img ociarchive.Image) error {
	tmp, err := os.CreateTemp(filepath.Dir(output), ".mkimage-*.tar")
	if err != nil {
		return fmt.Errorf("create output: %w", err)
	}
	defer os.Remove(tmp.Name())

	digest, err := ociarchive.Write(tmp, img)
	if err != nil {
		tmp.Close()
		return fmt.Errorf("write image %s: %w", img.Name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", tmp.Name(), err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("set mode of %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), output); err != nil {
		return fmt.Errorf("move image into place: %w", err)
	}
	fmt.Printf("%s %s\n", digest, output)
	return nil
}
