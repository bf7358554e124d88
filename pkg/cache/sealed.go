package cache

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// KeySize is the size of the sealed store's AES-256 key.
const KeySize = 32

const (
	// magic starts every sealed file and names the format version.
	magic     = "PHS1"
	headerLen = len(magic) + 8 // magic and the expiry in Unix nanoseconds
	fileMode  = 0o600
	dirMode   = 0o700
	tmpPrefix = ".tmp-"
	aadLabel  = "phantom sealed cache v1"
)

// ErrCorrupt means a sealed file cannot be decrypted: it is damaged, was
// written under another key (before a reboot), or was moved from another
// entry's name.
var ErrCorrupt = errors.New("sealed entry is corrupt or foreign")

// Sealed is an encrypted key-value store in a directory on a tmpfs. Each
// value is sealed with AES-256-GCM; the associated data binds the entry's
// scope, name and expiry, so a file copied over another entry's file, or
// with its expiry changed, fails to open. File names are SHA-256 hashes of
// scope and name, so a directory listing reveals no identity or path.
//
// Sealed is safe for concurrent use; writes are atomic renames.
type Sealed struct {
	dir  string
	aead cipher.AEAD
	log  *slog.Logger
}

// OpenSealed returns the store in dir, creating dir with mode 0700. key
// must be KeySize bytes.
func OpenSealed(dir string, key []byte, logger *slog.Logger) (*Sealed, error) {
	if len(key) != KeySize {
		return nil, fmt.Errorf("open sealed cache %s: key has %d bytes, want %d", dir, len(key), KeySize)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, fmt.Errorf("open sealed cache %s: %w", dir, err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, fmt.Errorf("open sealed cache %s: %w", dir, err)
	}
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return nil, fmt.Errorf("create sealed cache directory %s: %w", dir, err)
	}
	return &Sealed{dir: dir, aead: aead, log: logger}, nil
}

// Put seals value under scope and name, replacing an older value.
func (s *Sealed) Put(scope, name string, value []byte, expires time.Time) error {
	header := make([]byte, headerLen)
	copy(header, magic)
	binary.BigEndian.PutUint64(header[len(magic):], uint64(expires.UnixNano()))

	nonce := make([]byte, s.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return fmt.Errorf("seal cache entry: %w", err)
	}
	sealed := s.aead.Seal(nil, nonce, value, aad(scope, name, header))
	data := bytes.Join([][]byte{header, nonce, sealed}, nil)

	path := s.path(scope, name)
	tmp, err := os.CreateTemp(s.dir, tmpPrefix)
	if err != nil {
		return fmt.Errorf("write sealed cache entry: %w", err)
	}
	_, writeErr := tmp.Write(data)
	closeErr := tmp.Close()
	if err := errors.Join(writeErr, closeErr); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write sealed cache entry %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		_ = os.Remove(tmp.Name())
		return fmt.Errorf("write sealed cache entry %s: %w", path, err)
	}
	return nil
}

// Get opens the value under scope and name. A missing entry returns
// ok false and no error. A corrupt or foreign entry is deleted, logged and
// returned as an error wrapping ErrCorrupt; it is never returned as a value.
func (s *Sealed) Get(scope, name string) (value []byte, expires time.Time, ok bool, err error) {
	path := s.path(scope, name)
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, time.Time{}, false, nil
	}
	if err != nil {
		return nil, time.Time{}, false, fmt.Errorf("read sealed cache entry %s: %w", path, err)
	}

	value, expires, err = s.open(scope, name, data)
	if err != nil {
		s.discard(path, err)
		return nil, time.Time{}, false, err
	}
	return value, expires, true, nil
}

// Delete removes the entry under scope and name, if any.
func (s *Sealed) Delete(scope, name string) {
	if err := os.Remove(s.path(scope, name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("failed to delete sealed cache entry", "error", err.Error())
	}
}

// Sweep deletes entries whose expiry lies more than keep before now, files
// that are not sealed entries of this format, and temporary files left by
// an interrupted write. It returns how many files it deleted.
func (s *Sealed) Sweep(now time.Time, keep time.Duration) (int, error) {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		return 0, fmt.Errorf("sweep sealed cache %s: %w", s.dir, err)
	}
	deleted := 0
	for _, entry := range entries {
		path := filepath.Join(s.dir, entry.Name())
		if s.sweepable(path, entry.Name(), now, keep) {
			if err := os.Remove(path); err == nil {
				deleted++
			}
		}
	}
	return deleted, nil
}

func (s *Sealed) sweepable(path, name string, now time.Time, keep time.Duration) bool {
	if strings.HasPrefix(name, tmpPrefix) {
		return true
	}
	data, err := os.ReadFile(path)
	if err != nil || len(data) < headerLen || string(data[:len(magic)]) != magic {
		s.log.Warn("discarding a file in the sealed cache that is not a sealed entry", "file", name)
		return true
	}
	expires := time.Unix(0, int64(binary.BigEndian.Uint64(data[len(magic):headerLen])))
	return !now.Before(expires.Add(keep))
}

func (s *Sealed) open(scope, name string, data []byte) ([]byte, time.Time, error) {
	nonceSize := s.aead.NonceSize()
	if len(data) < headerLen+nonceSize+s.aead.Overhead() || string(data[:len(magic)]) != magic {
		return nil, time.Time{}, fmt.Errorf("%w: too short or unknown format", ErrCorrupt)
	}
	header := data[:headerLen]
	nonce := data[headerLen : headerLen+nonceSize]
	value, err := s.aead.Open(nil, nonce, data[headerLen+nonceSize:], aad(scope, name, header))
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("%w: authentication failed", ErrCorrupt)
	}
	expires := time.Unix(0, int64(binary.BigEndian.Uint64(header[len(magic):])))
	return value, expires, nil
}

func (s *Sealed) discard(path string, cause error) {
	s.log.Warn("discarding sealed cache entry that cannot be opened; it is never served",
		"file", filepath.Base(path), "error", cause.Error())
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.log.Warn("failed to delete sealed cache entry", "file", filepath.Base(path), "error", err.Error())
	}
}

func (s *Sealed) path(scope, name string) string {
	sum := sha256.Sum256([]byte(scope + "\x00" + name))
	return filepath.Join(s.dir, hex.EncodeToString(sum[:]))
}

// aad is the associated data of an entry: a label, the length-prefixed
// scope and name, and the header with the expiry.
func aad(scope, name string, header []byte) []byte {
	var b bytes.Buffer
	b.WriteString(aadLabel)
	for _, part := range []string{scope, name} {
		_ = binary.Write(&b, binary.BigEndian, uint32(len(part)))
		b.WriteString(part)
	}
	b.Write(header)
	return b.Bytes()
}
