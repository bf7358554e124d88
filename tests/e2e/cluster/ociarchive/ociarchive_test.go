package ociarchive

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestNormalizeName(t *testing.T) {
	t.Parallel()

	tests := []struct {
		name    string
		want    string
		wantErr bool
	}{
		{name: "phantom/busybox:e2e", want: "docker.io/phantom/busybox:e2e"},
		{name: "busybox:1", want: "docker.io/library/busybox:1"},
		{name: "registry.example:5000/a/b:v1", want: "registry.example:5000/a/b:v1"},
		{name: "localhost/pause:3", want: "localhost/pause:3"},
		{name: "docker.io/phantom/node:dev", want: "docker.io/phantom/node:dev"},
		{name: "", wantErr: true},
		{name: "phantom/busybox", wantErr: true},
		{name: "registry.example:5000/busybox", wantErr: true},
		{name: "phantom/busybox@sha256:00", wantErr: true},
		{name: "Phantom/busybox:e2e", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()

			got, err := NormalizeName(tt.name)
			if tt.wantErr {
				if !errors.Is(err, ErrInvalidImage) {
					t.Fatalf("NormalizeName(%q) error = %v, want ErrInvalidImage", tt.name, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("NormalizeName(%q): %v", tt.name, err)
			}
			if got != tt.want {
				t.Errorf("NormalizeName(%q) = %q, want %q", tt.name, got, tt.want)
			}
		})
	}
}

// readLayout unpacks an OCI layout tarball into a map from file name to
// content.
func readLayout(t *testing.T, archive []byte) map[string][]byte {
	t.Helper()

	files := map[string][]byte{}
	tr := tar.NewReader(bytes.NewReader(archive))
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatalf("read archive: %v", err)
		}
		if hdr.Typeflag != tar.TypeReg {
			continue
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("read archive entry %s: %v", hdr.Name, err)
		}
		files[hdr.Name] = data
	}
}

func blob(t *testing.T, files map[string][]byte, digest string) []byte {
	t.Helper()

	data, ok := files["blobs/sha256/"+strings.TrimPrefix(digest, "sha256:")]
	if !ok {
		t.Fatalf("blob %s missing from archive", digest)
	}
	if got := digestOf(data); got != digest {
		t.Fatalf("blob %s has digest %s", digest, got)
	}
	return data
}

// layerEntry is what the test checks of one layer entry.
type layerEntry struct {
	Type     byte
	Mode     int64
	Linkname string
	Content  string
}

func TestWriteImageLayout(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()
	binary := filepath.Join(dir, "tool")
	if err := os.WriteFile(binary, []byte("#!binary"), 0o750); err != nil {
		t.Fatal(err)
	}

	img := Image{
		Name: "phantom/tool:e2e",
		Entries: []Entry{
			{Path: "/usr/bin/tool", Source: binary},
			{Path: "/bin/sh", Linkname: "/usr/bin/tool"},
			{Path: "/etc/tool.conf", Source: binary, Mode: 0o600},
		},
		Entrypoint:   []string{"/usr/bin/tool"},
		Cmd:          []string{"--serve"},
		Architecture: "arm64",
	}
	var out bytes.Buffer
	manifestDigest, err := Write(&out, img)
	if err != nil {
		t.Fatalf("Write: %v", err)
	}
	files := readLayout(t, out.Bytes())

	if got := string(files["oci-layout"]); got != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %s", got)
	}

	var index ociIndex
	if err := json.Unmarshal(files["index.json"], &index); err != nil {
		t.Fatalf("decode index.json: %v", err)
	}
	wantDesc := descriptor{
		MediaType: mediaTypeManifest,
		Digest:    manifestDigest,
		Platform:  &platform{OS: "linux", Architecture: "arm64"},
		Annotations: map[string]string{
			annotationContainerdImage: "docker.io/phantom/tool:e2e",
			annotationRefName:         "e2e",
		},
	}
	if len(index.Manifests) != 1 {
		t.Fatalf("index has %d manifests, want 1", len(index.Manifests))
	}
	gotDesc := index.Manifests[0]
	gotDesc.Size = 0
	if diff := cmp.Diff(wantDesc, gotDesc); diff != "" {
		t.Errorf("index manifest descriptor (-want +got):\n%s", diff)
	}

	var manifest ociManifest
	if err := json.Unmarshal(blob(t, files, manifestDigest), &manifest); err != nil {
		t.Fatalf("decode manifest: %v", err)
	}
	if len(manifest.Layers) != 1 {
		t.Fatalf("manifest has %d layers, want 1", len(manifest.Layers))
	}
	layer := blob(t, files, manifest.Layers[0].Digest)

	var config ociImageConfig
	if err := json.Unmarshal(blob(t, files, manifest.Config.Digest), &config); err != nil {
		t.Fatalf("decode config: %v", err)
	}
	wantConfig := ociImageConfig{
		Created:      time.Unix(0, 0).UTC(),
		Architecture: "arm64",
		OS:           "linux",
		Config: runtimeConfig{
			Env:        []string{defaultPath},
			Entrypoint: []string{"/usr/bin/tool"},
			Cmd:        []string{"--serve"},
		},
		RootFS: rootFS{Type: "layers", DiffIDs: []string{manifest.Layers[0].Digest}},
	}
	if diff := cmp.Diff(wantConfig, config); diff != "" {
		t.Errorf("image config (-want +got):\n%s", diff)
	}

	wantLayer := map[string]layerEntry{
		"bin/":          {Type: tar.TypeDir, Mode: 0o755},
		"bin/sh":        {Type: tar.TypeSymlink, Mode: 0o777, Linkname: "/usr/bin/tool"},
		"etc/":          {Type: tar.TypeDir, Mode: 0o755},
		"etc/tool.conf": {Type: tar.TypeReg, Mode: 0o600, Content: "#!binary"},
		"usr/":          {Type: tar.TypeDir, Mode: 0o755},
		"usr/bin/":      {Type: tar.TypeDir, Mode: 0o755},
		"usr/bin/tool":  {Type: tar.TypeReg, Mode: 0o750, Content: "#!binary"},
	}
	if diff := cmp.Diff(wantLayer, readLayer(t, layer)); diff != "" {
		t.Errorf("layer entries (-want +got):\n%s", diff)
	}
}

func readLayer(t *testing.T, layer []byte) map[string]layerEntry {
	t.Helper()

	got := map[string]layerEntry{}
	var order []string
	tr := tar.NewReader(bytes.NewReader(layer))
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("read layer: %v", err)
		}
		content, err := io.ReadAll(tr)
		if err != nil {
			t.Fatalf("read layer entry %s: %v", hdr.Name, err)
		}
		got[hdr.Name] = layerEntry{Type: hdr.Typeflag, Mode: hdr.Mode, Linkname: hdr.Linkname, Content: string(content)}
		order = append(order, hdr.Name)
	}

	// A parent directory must precede its children, or some unpackers
	// create it with default permissions.
	for i, name := range order {
		parent := filepath.Dir(strings.TrimSuffix(name, "/")) + "/"
		if parent == "./" {
			continue
		}
		for _, later := range order[i+1:] {
			if later == parent {
				t.Errorf("layer entry %s comes before its parent %s", name, parent)
			}
		}
	}
	return got
}

func TestWriteIsReproducible(t *testing.T) {
	t.Parallel()

	binary := filepath.Join(t.TempDir(), "pause")
	if err := os.WriteFile(binary, []byte("pause"), 0o755); err != nil {
		t.Fatal(err)
	}
	img := Image{Name: "phantom/pause:e2e", Entries: []Entry{{Path: "/pause", Source: binary}}, Entrypoint: []string{"/pause"}}

	var first, second bytes.Buffer
	firstDigest, err := Write(&first, img)
	if err != nil {
		t.Fatalf("first Write: %v", err)
	}
	secondDigest, err := Write(&second, img)
	if err != nil {
		t.Fatalf("second Write: %v", err)
	}
	if firstDigest != secondDigest {
		t.Errorf("manifest digests differ: %s and %s", firstDigest, secondDigest)
	}
	if !bytes.Equal(first.Bytes(), second.Bytes()) {
		t.Error("archives of the same image differ")
	}
}

func TestWriteRejectsInvalidEntries(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		desc    string
		entries []Entry
		wantMsg string
	}{
		{"relative path", []Entry{{Path: "bin/x", Source: file}}, `path "bin/x" is not absolute`},
		{"unclean path", []Entry{{Path: "/bin/../x", Source: file}}, `path "/bin/../x" is not a clean path`},
		{"root path", []Entry{{Path: "/", Source: file}}, `path "/" is not a clean path`},
		{"source and link", []Entry{{Path: "/x", Source: file, Linkname: "/y"}}, "has both a source and a link target"},
		{"type bits in mode", []Entry{{Path: "/x", Source: file, Mode: fs.ModeDir | 0o755}}, "give permission bits only"},
		{"duplicate path", []Entry{{Path: "/x", Source: file}, {Path: "/x", Linkname: "/y"}}, "path /x appears twice"},
		{"file as parent", []Entry{{Path: "/x", Source: file}, {Path: "/x/y", Source: file}}, "path /x is a parent of /x/y but is not a directory"},
		{"source is directory", []Entry{{Path: "/x", Source: dir}}, "is not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.desc, func(t *testing.T) {
			t.Parallel()

			_, err := Write(io.Discard, Image{Name: "phantom/x:e2e", Entries: tt.entries})
			if !errors.Is(err, ErrInvalidImage) {
				t.Fatalf("Write error = %v, want ErrInvalidImage", err)
			}
			if !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("Write error = %q, want it to contain %q", err, tt.wantMsg)
			}
		})
	}
}

func TestWriteMissingSource(t *testing.T) {
	t.Parallel()

	missing := filepath.Join(t.TempDir(), "missing")
	_, err := Write(io.Discard, Image{Name: "phantom/x:e2e", Entries: []Entry{{Path: "/x", Source: missing}}})
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Write error = %v, want fs.ErrNotExist", err)
	}
	if !strings.Contains(err.Error(), "open source of /x") {
		t.Errorf("Write error = %q, want it to name the entry /x", err)
	}
}
