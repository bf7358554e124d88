package sovereignty

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// chunkSize is how much of a file a scan reads at once.
const chunkSize = 1 << 20

// Source kinds of a hit.
const (
	SourceEtcd = "etcd"
	SourceFile = "file"
	SourceLog  = "log"
)

// Hit is one value found in one place.
type Hit struct {
	Match
	// Source is SourceEtcd, SourceFile or SourceLog.
	Source string
	// Where is the etcd key, the file path or the log's name.
	Where string
}

func (h Hit) String() string {
	kind := "secret"
	if h.Decoy {
		kind = "decoy"
	}
	return fmt.Sprintf("%s %q (%s) in %s %s", kind, h.Label, h.Encoding, h.Source, h.Where)
}

// SkippedMount is a mount point below a scanned directory that the scan
// did not enter.
type SkippedMount struct {
	Path   string
	FSType string
	Reason string
}

// Report counts what a Scanner read and lists what it found.
type Report struct {
	// SecretValues is the number of values searched for that are not
	// decoys.
	SecretValues int
	EtcdKeys     int
	Files        int
	FileBytes    int64
	LogLines     int
	Skipped      []SkippedMount
	Hits         []Hit
}

// SecretHits returns the hits of values that are not decoys.
func (r *Report) SecretHits() []Hit {
	var out []Hit
	for _, h := range r.Hits {
		if !h.Decoy {
			out = append(out, h)
		}
	}
	return out
}

// DecoyFound reports whether the decoy labeled label was found in source.
func (r *Report) DecoyFound(label, source string) bool {
	for _, h := range r.Hits {
		if h.Decoy && h.Label == label && h.Source == source {
			return true
		}
	}
	return false
}

// SkippedByType counts the skipped mounts per file system type, such as
// "tmpfs 4, overlay 3".
func (r *Report) SkippedByType() string {
	counts := map[string]int{}
	for _, s := range r.Skipped {
		counts[s.FSType]++
	}
	types := make([]string, 0, len(counts))
	for t := range counts {
		types = append(types, t)
	}
	sort.Strings(types)
	parts := make([]string, len(types))
	for i, t := range types {
		parts[i] = fmt.Sprintf("%s %d", t, counts[t])
	}
	return strings.Join(parts, ", ")
}

// Summary is the one-line result: what was scanned and how many hits of
// secret values there were.
func (r *Report) Summary() string {
	values := fmt.Sprintf("%d secret values", r.SecretValues)
	if r.SecretValues == 1 {
		values = "1 secret value"
	}
	return fmt.Sprintf("scanned %d etcd keys, %d files (%.1f MiB), %d log lines for %s: %d hits",
		r.EtcdKeys, r.Files, float64(r.FileBytes)/(1<<20), r.LogLines, values, len(r.SecretHits()))
}

// Scanner scans sources with one Matcher and accumulates a Report. It is
// not safe for concurrent use.
type Scanner struct {
	matcher *Matcher
	report  Report
	// inspectMount decides whether a mount point is scanned; see
	// mountPolicy in the platform files.
	inspectMount func(path string) (fsType string, scan bool, reason string, err error)
}

// NewScanner returns a Scanner for values.
func NewScanner(values []Value) (*Scanner, error) {
	m, err := NewMatcher(values)
	if err != nil {
		return nil, err
	}
	return &Scanner{matcher: m, inspectMount: mountPolicy}, nil
}

// Report returns a copy of the report so far.
func (s *Scanner) Report() *Report {
	r := s.report
	r.Skipped = append([]SkippedMount(nil), s.report.Skipped...)
	r.Hits = append([]Hit(nil), s.report.Hits...)
	for _, v := range s.matcher.Values() {
		if !v.Decoy {
			r.SecretValues++
		}
	}
	return &r
}

// ScanStream scans everything r returns as one stream named where, so a
// value split between two reads is found too. It returns the number of
// bytes and newlines read.
func (s *Scanner) ScanStream(source, where string, r io.Reader) (int64, int, error) {
	seen := map[int]bool{}
	buf := make([]byte, 0, chunkSize+s.matcher.maxLen)
	var total int64
	lines := 0
	for {
		n, err := io.ReadFull(r, buf[len(buf):cap(buf)])
		if n > 0 {
			chunk := buf[len(buf) : len(buf)+n]
			lines += bytes.Count(chunk, []byte{'\n'})
			total += int64(n)
			buf = buf[:len(buf)+n]
			s.matcher.find(buf, func(idx int) { seen[idx] = true })
			// Keep the tail that a pattern starting in it may need.
			keep := min(len(buf), s.matcher.maxLen-1)
			buf = append(buf[:0], buf[len(buf)-keep:]...)
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			break
		}
		if err != nil {
			return total, lines, fmt.Errorf("read %s: %w", where, err)
		}
	}
	for _, m := range s.matcher.matches(seen) {
		s.report.Hits = append(s.report.Hits, Hit{Match: m, Source: source, Where: where})
	}
	return total, lines, nil
}

// ScanLog scans a log and counts its lines.
func (s *Scanner) ScanLog(name string, r io.Reader) error {
	_, lines, err := s.ScanStream(SourceLog, name, r)
	s.report.LogLines += lines
	return err
}

// ScanLogFiles scans every regular file below dir as a log.
func (s *Scanner) ScanLogFiles(dir string) error {
	return filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return ignoreVanished(err)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return ignoreVanished(err)
		}
		defer f.Close()
		return s.ScanLog(path, f)
	})
}

// ScanTree scans every regular file below root on a disk-backed file
// system, without following symbolic links. It does not enter mount points
// whose file system keeps no data on disk (tmpfs, ramfs, proc and other
// pseudo file systems). Nor does it enter overlay mounts, whose layers are
// directories that the scan reaches directly. Report.Skipped lists each
// mount point it did not enter.
func (s *Scanner) ScanTree(root string) error {
	rootDev, err := deviceOf(root)
	if err != nil {
		return err
	}
	if _, scan, _, err := s.checkMount(root); err != nil || !scan {
		return err
	}
	parents := map[string]uint64{root: rootDev}

	return filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return ignoreVanished(err)
		}
		if path == root {
			return nil
		}
		if !d.IsDir() && !d.Type().IsRegular() {
			return nil
		}
		dev, err := deviceOf(path)
		if err != nil {
			return ignoreVanished(err)
		}
		if dev != parents[filepath.Dir(path)] {
			_, scan, _, err := s.checkMount(path)
			if err != nil {
				return ignoreVanished(err)
			}
			if !scan {
				if d.IsDir() {
					return filepath.SkipDir
				}
				return nil
			}
		}
		if d.IsDir() {
			parents[path] = dev
			return nil
		}
		return s.scanFile(path)
	})
}

// checkMount applies the mount policy to path and records a skip.
func (s *Scanner) checkMount(path string) (string, bool, string, error) {
	fsType, scan, reason, err := s.inspectMount(path)
	if err != nil {
		return "", false, "", err
	}
	if !scan {
		s.report.Skipped = append(s.report.Skipped, SkippedMount{Path: path, FSType: fsType, Reason: reason})
	}
	return fsType, scan, reason, nil
}

func (s *Scanner) scanFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return ignoreVanished(err)
	}
	defer f.Close()
	n, _, err := s.ScanStream(SourceFile, path, f)
	if err != nil {
		return err
	}
	s.report.Files++
	s.report.FileBytes += n
	return nil
}

// ignoreVanished drops errors about files that disappeared during the
// walk, which containerd and kubelet temporary files do.
func ignoreVanished(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// EtcdKV is one key and value of etcd.
type EtcdKV struct {
	Key   []byte
	Value []byte
}

// ParseEtcdctlJSON parses the output of `etcdctl get --prefix "" -w json`,
// whose keys and values are base64-encoded.
func ParseEtcdctlJSON(data []byte) ([]EtcdKV, error) {
	var out struct {
		KVs []struct {
			Key   string `json:"key"`
			Value string `json:"value"`
		} `json:"kvs"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return nil, fmt.Errorf("parse etcdctl JSON output: %w", err)
	}
	kvs := make([]EtcdKV, 0, len(out.KVs))
	for i, kv := range out.KVs {
		key, err := base64.StdEncoding.DecodeString(kv.Key)
		if err != nil {
			return nil, fmt.Errorf("decode key %d of etcdctl output: %w", i, err)
		}
		value, err := base64.StdEncoding.DecodeString(kv.Value)
		if err != nil {
			return nil, fmt.Errorf("decode value of etcd key %q: %w", key, err)
		}
		kvs = append(kvs, EtcdKV{Key: key, Value: value})
	}
	return kvs, nil
}

// ScanEtcd scans each key and its value.
func (s *Scanner) ScanEtcd(kvs []EtcdKV) error {
	for _, kv := range kvs {
		stream := io.MultiReader(bytes.NewReader(kv.Key), bytes.NewReader([]byte{0}), bytes.NewReader(kv.Value))
		if _, _, err := s.ScanStream(SourceEtcd, string(kv.Key), stream); err != nil {
			return err
		}
		s.report.EtcdKeys++
	}
	return nil
}
