// Package state keeps the node plugin's index of published volumes under
// its state directory, so a restarted daemon finds its mounts, resumes
// lease renewal and rotation, and cleans up volumes whose pods are gone.
//
// The index holds no secret value and no token: volume and pod identity,
// the volume attributes (which name OpenBao paths, not values), lease ids
// and times. One JSON file per volume, named by the SHA-256 of the volume
// id, is replaced by an atomic rename, so a daemon killed during a write
// leaves the old record or the new one, never half of one.
//
// A Store is safe for concurrent use as long as each volume is written by
// one goroutine at a time.
package state

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"
)

const (
	version   = 1
	suffix    = ".json"
	tmpPrefix = ".tmp-"
	fileMode  = 0o600
	dirMode   = 0o700
)

// Lease is a lease of a dynamic secret held by a volume.
type Lease struct {
	ID string `json:"id"`
	// Key names the dynamic read (path and request data) that issued it.
	Key       string        `json:"key"`
	Path      string        `json:"path"`
	Issued    time.Time     `json:"issued"`
	Renewed   time.Time     `json:"renewed,omitempty"`
	Expires   time.Time     `json:"expires"`
	TTL       time.Duration `json:"ttl"`
	Renewable bool          `json:"renewable"`
	// Capped is true once OpenBao granted less than the requested TTL: the
	// lease is at its max TTL and must be replaced, not renewed.
	Capped bool `json:"capped,omitempty"`
	// Retired is true once new credentials replaced the lease's: it is
	// revoked as soon as the files no longer hold its credentials.
	Retired bool `json:"retired,omitempty"`
}

// Record is the index entry of one volume.
type Record struct {
	Version        int               `json:"version"`
	VolumeID       string            `json:"volume_id"`
	Target         string            `json:"target"`
	Namespace      string            `json:"namespace"`
	PodName        string            `json:"pod_name"`
	PodUID         string            `json:"pod_uid"`
	ServiceAccount string            `json:"service_account"`
	Role           string            `json:"role"`
	Attributes     map[string]string `json:"attributes"`
	SpecHash       string            `json:"spec_hash"`
	ReadOnly       bool              `json:"read_only,omitempty"`
	GID            *int64            `json:"gid,omitempty"`
	MaxBytes       int64             `json:"max_bytes"`
	Leases         []Lease           `json:"leases,omitempty"`
	// RefreshedAt is when the volume's KV content was last read.
	RefreshedAt time.Time `json:"refreshed_at"`
}

// Store is the index in one directory.
type Store struct {
	dir string
}

// Open returns the index in dir, creating dir with mode 0700.
func Open(dir string) (*Store, error) {
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, fmt.Errorf("create volume index directory %s: %w", dir, err)
	}
	return &Store{dir: dir}, nil
}

// Put writes the record of r.VolumeID, replacing the previous one.
func (s *Store) Put(r *Record) error {
	r.Version = version
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode index record of volume %s: %w", r.VolumeID, err)
	}

	tmp, err := os.CreateTemp(s.dir, tmpPrefix)
	if err != nil {
		return fmt.Errorf("write index record of volume %s: %w", r.VolumeID, err)
	}
	_, writeErr := tmp.Write(data)
	closeErr := tmp.Close()
	if err := errors.Join(writeErr, closeErr); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write index record of volume %s: %w", r.VolumeID, err)
	}
	if err := os.Rename(tmp.Name(), s.path(r.VolumeID)); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write index record of volume %s: %w", r.VolumeID, err)
	}
	return nil
}

// Delete removes the record of volumeID; a missing record is not an error.
func (s *Store) Delete(volumeID string) error {
	if err := os.Remove(s.path(volumeID)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete index record of volume %s: %w", volumeID, err)
	}
	return nil
}

// List returns every readable record. Files that cannot be read or decoded
// are removed and reported in the joined error, and temporary files of an
// interrupted write are removed silently.
func (s *Store) List() ([]*Record, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return nil, fmt.Errorf("list volume index %s: %w", s.dir, err)
	}

	var records []*Record
	var errs []error
	for _, entry := range entries {
		path := filepath.Join(s.dir, entry.Name())
		switch {
		case strings.HasPrefix(entry.Name(), tmpPrefix):
			_ = os.Remove(path)
		case strings.HasSuffix(entry.Name(), suffix):
			r, err := read(path)
			if err != nil {
				_ = os.Remove(path)
				errs = append(errs, err)
				continue
			}
			records = append(records, r)
		}
	}
	return records, errors.Join(errs...)
}

func read(path string) (*Record, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read index record %s: %w", path, err)
	}
	var r Record
	if err := json.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("decode index record %s (removed): %w", path, err)
	}
	if r.Version != version || r.VolumeID == "" || r.Target == "" {
		return nil, fmt.Errorf("index record %s (removed) has version %d, volume %q, target %q: not a record of this version", path, r.Version, r.VolumeID, r.Target)
	}
	return &r, nil
}

func (s *Store) path(volumeID string) string {
	sum := sha256.Sum256([]byte(volumeID))
	return filepath.Join(s.dir, hex.EncodeToString(sum[:])+suffix)
}
