// Package fetch turns a volume spec into the files of a Phantom volume. It
// reads every item concurrently through a Source (the pod's OpenBao
// session, or the node plugin's cache in front of it) and lays the results
// out as the spec defines.
package fetch

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/phantom-sec/phantom/pkg/bao"
	"github.com/phantom-sec/phantom/pkg/spec"
	"github.com/phantom-sec/phantom/pkg/tmpfs"
)

// maxConcurrentReads bounds the reads of one volume in flight at once.
const maxConcurrentReads = 8

// ErrLayout means a secret's content cannot be laid out as files, for
// example a field missing or a field name that is not a portable file name.
var ErrLayout = errors.New("cannot lay out secret as files")

// Config configures a Fetcher.
type Config struct {
	// KVMount is the KV v2 mount of items without a mount of their own.
	KVMount string
	// KVPrefix is prepended to `<namespace>/<serviceAccount>` for volumes
	// that name no secrets.
	KVPrefix string
	// Now stamps the issue time of leases; nil means time.Now.
	Now func() time.Time
}

// Source reads secrets for one volume. *bao.Session implements it; the
// node plugin puts its cache in front of the session.
type Source interface {
	ListKV(ctx context.Context, mount, path string) ([]string, error)
	ReadKV(ctx context.Context, mount, path string) (*bao.Secret, error)
	ReadDynamic(ctx context.Context, path string, data map[string]any) (*bao.Secret, error)
}

var _ Source = (*bao.Session)(nil)

// Fetcher reads volume contents. Dynamic items of one volume that name the
// same path and data share one read, and so one lease.
type Fetcher struct {
	cfg Config
}

// Lease is a lease of a dynamic secret held by a volume.
type Lease struct {
	ID string
	// Key names the dynamic read that issued it; see DynamicKey.
	Key       string
	Path      string
	Duration  time.Duration
	Renewable bool
	Issued    time.Time
}

// Result is the content of a volume.
type Result struct {
	Files  []tmpfs.File
	Leases []Lease
}

// New returns a Fetcher.
func New(cfg Config) *Fetcher {
	if cfg.KVMount == "" {
		cfg.KVMount = "secret"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Fetcher{cfg: cfg}
}

// Fetch reads the items of s from src. With no items it reads every secret
// under the identity's default prefix.
func (f *Fetcher) Fetch(ctx context.Context, src Source, id bao.Identity, s *spec.Spec) (*Result, error) {
	items := s.Items
	if len(items) == 0 {
		var err error
		if items, err = f.defaultItems(ctx, src, id, s); err != nil {
			return nil, err
		}
	}

	secrets := make([]*bao.Secret, len(items))
	dynamic := make(map[string]*dynamicRead)
	var mu sync.Mutex
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(maxConcurrentReads)
	for i, item := range items {
		g.Go(func() error {
			var err error
			if item.Type == spec.TypeDynamic {
				mu.Lock()
				read := dynamicReadFor(dynamic, item)
				mu.Unlock()
				secrets[i], err = read.do(gctx, src, item)
			} else {
				secrets[i], err = src.ReadKV(gctx, f.mountOf(s, item), item.Path)
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}

	return layout(s, items, secrets, f.cfg.Now())
}

// defaultItems lists the identity's default prefix and returns one item per
// secret found there, each landing in a directory named after it.
func (f *Fetcher) defaultItems(ctx context.Context, src Source, id bao.Identity, s *spec.Spec) ([]spec.Item, error) {
	prefix := path.Join(f.cfg.KVPrefix, id.Namespace, id.ServiceAccount)
	mount := f.mountOf(s, spec.Item{})
	keys, err := src.ListKV(ctx, mount, prefix)
	if err != nil {
		if errors.Is(err, bao.ErrNotFound) {
			return nil, fmt.Errorf("no secrets under %s/%s (the default for volumes without a %q attribute): write secrets there or list them in %q: %w",
				mount, prefix, spec.AttrSecrets, spec.AttrSecrets, err)
		}
		return nil, err
	}

	var items []spec.Item
	for _, key := range keys {
		if strings.HasSuffix(key, "/") {
			// NOTE: only the first level is mounted; folders below the
			// prefix are skipped.
			continue
		}
		if err := spec.ValidateFileName(key); err != nil {
			return nil, fmt.Errorf("%w: secret %s/%s/%s: %w", ErrLayout, mount, prefix, key, err)
		}
		items = append(items, spec.Item{Path: prefix + "/" + key, Type: spec.TypeKV, Format: spec.FormatFields, Dir: key})
	}
	if len(items) == 0 {
		return nil, fmt.Errorf("no secrets under %s/%s: write secrets there or list them in %q: %w", mount, prefix, spec.AttrSecrets, bao.ErrNotFound)
	}
	return items, nil
}

func (f *Fetcher) mountOf(s *spec.Spec, item spec.Item) string {
	switch {
	case item.Mount != "":
		return item.Mount
	case s.KVMount != "":
		return s.KVMount
	default:
		return f.cfg.KVMount
	}
}

// dynamicRead makes one read of a dynamic path with given data for all
// items of a volume that name it, so they share one lease.
type dynamicRead struct {
	once   sync.Once
	secret *bao.Secret
	err    error
}

// DynamicKey names a dynamic read by its path and request data. Reads with
// equal keys issue interchangeable credentials.
func DynamicKey(path string, data map[string]any) string {
	encoded, _ := json.Marshal(data) // map[string]any from YAML always encodes
	return path + "\x00" + string(encoded)
}

func dynamicReadFor(reads map[string]*dynamicRead, item spec.Item) *dynamicRead {
	key := DynamicKey(item.Path, item.Data)
	read, ok := reads[key]
	if !ok {
		read = &dynamicRead{}
		reads[key] = read
	}
	return read
}

func (r *dynamicRead) do(ctx context.Context, src Source, item spec.Item) (*bao.Secret, error) {
	r.once.Do(func() {
		r.secret, r.err = src.ReadDynamic(ctx, item.Path, item.Data)
	})
	return r.secret, r.err
}
