// Package ociarchive writes single-layer container images as OCI image
// layout tarballs, the format that `ctr images import` reads. The end-to-end
// cluster has no registry and no Docker engine, so its images (the pod
// sandbox, a busybox test image and Phantom's own binaries) are assembled
// from static host files with this package.
//
// Output is deterministic: the same entries, configuration and creation time
// give the same digests, so importing an unchanged image is a no-op.
package ociarchive

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"runtime"
	"sort"
	"strings"
	"time"
)

// Media types and annotation keys from the OCI image specification v1.1 and
// containerd's image name annotation.
const (
	mediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	mediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	mediaTypeLayer    = "application/vnd.oci.image.layer.v1.tar"

	annotationRefName         = "org.opencontainers.image.ref.name"
	annotationContainerdImage = "io.containerd.image.name"

	defaultPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// ErrInvalidImage is returned, wrapped with the offending field, when an
// Image cannot be written.
var ErrInvalidImage = errors.New("invalid image")

// Entry is one file, symbolic link or directory of the image's only layer.
// Exactly one of Source and Linkname is set, or neither for a directory.
type Entry struct {
	// Path is the absolute, clean path inside the image, such as /bin/sh.
	Path string
	// Source is a regular host file whose content is copied to Path.
	Source string
	// Linkname is the target of a symbolic link at Path.
	Linkname string
	// Mode holds the permission bits. Zero means the source file's bits for
	// files and 0755 for directories.
	Mode fs.FileMode
}

// Image describes the image to write.
type Image struct {
	// Name is the reference under which containerd stores the image, such as
	// phantom/busybox:e2e. NormalizeName gives the stored form.
	Name    string
	Entries []Entry
	// Entrypoint, Cmd, Env, WorkingDir and User are the OCI image
	// configuration fields of the same names. Env defaults to a PATH of the
	// usual binary directories.
	Entrypoint []string
	Cmd        []string
	Env        []string
	WorkingDir string
	User       string
	// Architecture is the GOARCH-style CPU architecture of the binaries,
	// defaulting to the architecture this program runs on.
	Architecture string
	// Created is the creation time in the configuration and the modification
	// time of every layer entry. The zero value means the Unix epoch, which
	// keeps digests reproducible.
	Created time.Time
}

// NormalizeName returns the fully qualified form of an image reference, as
// the Kubernetes container runtime interface stores it: a reference without
// a registry host gets docker.io, one with a single path element also gets
// library/. The reference must carry a tag and no digest.
func NormalizeName(name string) (string, error) {
	if name == "" {
		return "", fmt.Errorf("%w: name is empty; give a reference such as phantom/busybox:e2e", ErrInvalidImage)
	}
	if strings.Contains(name, "@") {
		return "", fmt.Errorf("%w: name %q has a digest; give a tag instead", ErrInvalidImage, name)
	}
	if strings.ToLower(name) != name {
		return "", fmt.Errorf("%w: name %q has upper-case letters; image references are lower case", ErrInvalidImage, name)
	}

	lastSlash := strings.LastIndex(name, "/")
	if !strings.Contains(name[lastSlash+1:], ":") {
		return "", fmt.Errorf("%w: name %q has no tag; append one such as :e2e", ErrInvalidImage, name)
	}

	first, rest, found := strings.Cut(name, "/")
	switch {
	case !found:
		return "docker.io/library/" + name, nil
	case strings.ContainsAny(first, ".:") || first == "localhost":
		if rest == "" {
			return "", fmt.Errorf("%w: name %q has a registry but no repository", ErrInvalidImage, name)
		}
		return name, nil
	default:
		return "docker.io/" + name, nil
	}
}

// Write writes img to w as an uncompressed OCI image layout tarball and
// returns the digest of the image manifest. The layer is assembled in
// memory, so the entries' total size should stay within a few hundred MB.
func Write(w io.Writer, img Image) (string, error) {
	name, err := NormalizeName(img.Name)
	if err != nil {
		return "", err
	}
	entries, err := normalizeEntries(img.Entries)
	if err != nil {
		return "", err
	}
	created := img.Created
	if created.IsZero() {
		created = time.Unix(0, 0)
	}
	created = created.UTC()

	layer, err := buildLayer(entries, created)
	if err != nil {
		return "", err
	}
	layerDesc := describe(mediaTypeLayer, layer)

	config, err := json.Marshal(imageConfig(img, created, layerDesc.Digest))
	if err != nil {
		return "", fmt.Errorf("encode image config: %w", err)
	}
	configDesc := describe(mediaTypeConfig, config)

	manifest, err := json.Marshal(ociManifest{
		SchemaVersion: 2,
		MediaType:     mediaTypeManifest,
		Config:        configDesc,
		Layers:        []descriptor{layerDesc},
	})
	if err != nil {
		return "", fmt.Errorf("encode image manifest: %w", err)
	}
	manifestDesc := describe(mediaTypeManifest, manifest)
	manifestDesc.Platform = &platform{OS: "linux", Architecture: architecture(img)}
	manifestDesc.Annotations = map[string]string{
		annotationContainerdImage: name,
		annotationRefName:         name[strings.LastIndex(name, ":")+1:],
	}

	index, err := json.Marshal(ociIndex{
		SchemaVersion: 2,
		MediaType:     mediaTypeIndex,
		Manifests:     []descriptor{manifestDesc},
	})
	if err != nil {
		return "", fmt.Errorf("encode image index: %w", err)
	}

	if err := writeLayout(w, created, [][]byte{layer, config, manifest}, index); err != nil {
		return "", err
	}
	return manifestDesc.Digest, nil
}

// descriptor, platform, ociManifest, ociIndex and the config types mirror
// the OCI image specification's JSON documents, reduced to the fields
// written here.
type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Platform    *platform         `json:"platform,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

type ociManifest struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Config        descriptor   `json:"config"`
	Layers        []descriptor `json:"layers"`
}

type ociIndex struct {
	SchemaVersion int          `json:"schemaVersion"`
	MediaType     string       `json:"mediaType"`
	Manifests     []descriptor `json:"manifests"`
}

type ociImageConfig struct {
	Created      time.Time     `json:"created"`
	Architecture string        `json:"architecture"`
	OS           string        `json:"os"`
	Config       runtimeConfig `json:"config"`
	RootFS       rootFS        `json:"rootfs"`
}

type runtimeConfig struct {
	User       string   `json:"User,omitempty"`
	Env        []string `json:"Env,omitempty"`
	Entrypoint []string `json:"Entrypoint,omitempty"`
	Cmd        []string `json:"Cmd,omitempty"`
	WorkingDir string   `json:"WorkingDir,omitempty"`
}

type rootFS struct {
	Type    string   `json:"type"`
	DiffIDs []string `json:"diff_ids"`
}

func imageConfig(img Image, created time.Time, layerDigest string) ociImageConfig {
	env := img.Env
	if len(env) == 0 {
		env = []string{defaultPath}
	}
	return ociImageConfig{
		Created:      created,
		Architecture: architecture(img),
		OS:           "linux",
		Config: runtimeConfig{
			User:       img.User,
			Env:        env,
			Entrypoint: img.Entrypoint,
			Cmd:        img.Cmd,
			WorkingDir: img.WorkingDir,
		},
		// The layer is uncompressed, so its diff ID equals its digest.
		RootFS: rootFS{Type: "layers", DiffIDs: []string{layerDigest}},
	}
}

func architecture(img Image) string {
	if img.Architecture != "" {
		return img.Architecture
	}
	return runtime.GOARCH
}

func describe(mediaType string, blob []byte) descriptor {
	return descriptor{MediaType: mediaType, Digest: digestOf(blob), Size: int64(len(blob))}
}

func digestOf(blob []byte) string {
	sum := sha256.Sum256(blob)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// normalizeEntries checks every entry, adds the missing parent directories
// and returns the entries sorted by path, so parents precede children.
func normalizeEntries(entries []Entry) ([]Entry, error) {
	byPath := make(map[string]Entry, len(entries))
	for i, e := range entries {
		if err := checkEntry(e); err != nil {
			return nil, fmt.Errorf("entry %d: %w", i, err)
		}
		if _, dup := byPath[e.Path]; dup {
			return nil, fmt.Errorf("%w: entry %d: path %s appears twice", ErrInvalidImage, i, e.Path)
		}
		byPath[e.Path] = e
	}

	for _, e := range entries {
		for dir := path.Dir(e.Path); dir != "/"; dir = path.Dir(dir) {
			existing, ok := byPath[dir]
			if !ok {
				byPath[dir] = Entry{Path: dir}
				continue
			}
			if existing.Source != "" || existing.Linkname != "" {
				return nil, fmt.Errorf("%w: path %s is a parent of %s but is not a directory", ErrInvalidImage, dir, e.Path)
			}
		}
	}

	out := make([]Entry, 0, len(byPath))
	for _, e := range byPath {
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Path < out[j].Path })
	return out, nil
}

func checkEntry(e Entry) error {
	switch {
	case e.Path == "" || e.Path[0] != '/':
		return fmt.Errorf("%w: path %q is not absolute; write it as /bin/name", ErrInvalidImage, e.Path)
	case path.Clean(e.Path) != e.Path || e.Path == "/":
		return fmt.Errorf("%w: path %q is not a clean path below /; write it as %s", ErrInvalidImage, e.Path, path.Clean(e.Path))
	case e.Source != "" && e.Linkname != "":
		return fmt.Errorf("%w: path %s has both a source and a link target; set one", ErrInvalidImage, e.Path)
	case e.Mode&^fs.ModePerm != 0:
		return fmt.Errorf("%w: path %s has mode %v; give permission bits only", ErrInvalidImage, e.Path, e.Mode)
	}
	return nil
}

// buildLayer returns the layer tarball holding entries, read from the host.
func buildLayer(entries []Entry, modTime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		if err := addEntry(tw, e, modTime); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, fmt.Errorf("finish layer: %w", err)
	}
	return buf.Bytes(), nil
}

func addEntry(tw *tar.Writer, e Entry, modTime time.Time) error {
	hdr := &tar.Header{
		Name:    strings.TrimPrefix(e.Path, "/"),
		ModTime: modTime,
		Format:  tar.FormatPAX,
	}

	switch {
	case e.Linkname != "":
		hdr.Typeflag = tar.TypeSymlink
		hdr.Linkname = e.Linkname
		hdr.Mode = 0o777
		return writeHeader(tw, hdr)
	case e.Source == "":
		hdr.Typeflag = tar.TypeDir
		hdr.Name += "/"
		hdr.Mode = int64(modeOr(e.Mode, 0o755))
		return writeHeader(tw, hdr)
	}

	f, err := os.Open(e.Source)
	if err != nil {
		return fmt.Errorf("open source of %s: %w", e.Path, err)
	}
	defer f.Close()

	info, err := f.Stat()
	if err != nil {
		return fmt.Errorf("stat source of %s: %w", e.Path, err)
	}
	if !info.Mode().IsRegular() {
		return fmt.Errorf("%w: source %s of %s is not a regular file", ErrInvalidImage, e.Source, e.Path)
	}
	hdr.Typeflag = tar.TypeReg
	hdr.Size = info.Size()
	hdr.Mode = int64(modeOr(e.Mode, info.Mode().Perm()))
	if err := writeHeader(tw, hdr); err != nil {
		return err
	}
	if _, err := io.Copy(tw, f); err != nil {
		return fmt.Errorf("copy %s into layer: %w", e.Source, err)
	}
	return nil
}

func writeHeader(tw *tar.Writer, hdr *tar.Header) error {
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("write layer entry %s: %w", hdr.Name, err)
	}
	return nil
}

func modeOr(mode, fallback fs.FileMode) fs.FileMode {
	if mode == 0 {
		return fallback
	}
	return mode
}

// archiveFile is one regular file of the output tarball.
type archiveFile struct {
	name string
	data []byte
}

// writeLayout writes the OCI image layout: the oci-layout marker, each blob
// under blobs/sha256/ and index.json.
func writeLayout(w io.Writer, modTime time.Time, blobs [][]byte, index []byte) error {
	files := []archiveFile{{"oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)}}
	for _, blob := range blobs {
		files = append(files, archiveFile{"blobs/sha256/" + strings.TrimPrefix(digestOf(blob), "sha256:"), blob})
	}
	files = append(files, archiveFile{"index.json", index})

	tw := tar.NewWriter(w)
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		hdr := &tar.Header{Typeflag: tar.TypeDir, Name: dir, Mode: 0o755, ModTime: modTime, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("write archive directory %s: %w", dir, err)
		}
	}
	for _, f := range files {
		hdr := &tar.Header{Typeflag: tar.TypeReg, Name: f.name, Mode: 0o644, Size: int64(len(f.data)), ModTime: modTime, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("write archive entry %s: %w", f.name, err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return fmt.Errorf("write archive entry %s: %w", f.name, err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("finish archive: %w", err)
	}
	return nil
}
