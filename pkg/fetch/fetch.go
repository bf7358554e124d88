// Package fetch turns a volume spec into the files of a Phantom volume: it
// reads every item from OpenBao with the pod's session, concurrently, and
// lays the results out as the spec says.
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
	"golang.org/x/sync/singleflight"

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
}

// Fetcher reads volume contents. Identical KV reads of one OpenBao identity
// that are in flight at the same time are made once; dynamic reads are
// never shared between volumes, because each volume owns its lease.
type Fetcher struct {
	cfg   Config
	reads singleflight.Group
}

// Lease is a lease of a dynamic secret held by a volume.
type Lease struct {
	ID        string
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
	return &Fetcher{cfg: cfg}
}

// Fetch reads the items of s with session. With no items it reads every
// secret under the identity's default prefix.
func (f *Fetcher) Fetch(ctx context.Context, session *bao.Session, id bao.Identity, s *spec.Spec) (*Result, error) {
	items := s.Items
	if len(items) == 0 {
		var err error
		if items, err = f.defaultItems(ctx, session, id, s); err != nil {
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
				secrets[i], err = read.do(gctx, session, item)
			} else {
				secrets[i], err = f.readKV(gctx, session, id, f.mountOf(s, item), item.Path)
			}
			return err
		})
	}
	if err := g.Wait(); err != nil {
		return nil, err
	}

	return layout(s, items, secrets)
}

// defaultItems lists the identity's default prefix and returns one item per
// secret found there, each landing in a directory named after it.
func (f *Fetcher) defaultItems(ctx context.Context, session *bao.Session, id bao.Identity, s *spec.Spec) ([]spec.Item, error) {
	prefix := path.Join(f.cfg.KVPrefix, id.Namespace, id.ServiceAccount)
	mount := f.mountOf(s, spec.Item{})
	keys, err := session.ListKV(ctx, mount, prefix)
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

func (f *Fetcher) readKV(ctx context.Context, session *bao.Session, id bao.Identity, mount, p string) (*bao.Secret, error) {
	// The session's token is part of the key: two identities never share a
	// read, even of the same path.
	key := strings.Join([]string{session.Login().Accessor, id.Namespace, id.ServiceAccount, id.Role, mount, p}, "\x00")
	v, err, _ := f.reads.Do(key, func() (any, error) {
		return session.ReadKV(ctx, mount, p)
	})
	if err != nil {
		return nil, err
	}
	return v.(*bao.Secret), nil
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

func dynamicReadFor(reads map[string]*dynamicRead, item spec.Item) *dynamicRead {
	data, _ := json.Marshal(item.Data) // map[string]any from YAML always encodes
	key := item.Path + "\x00" + string(data)
	read, ok := reads[key]
	if !ok {
		read = &dynamicRead{}
		reads[key] = read
	}
	return read
}

func (r *dynamicRead) do(ctx context.Context, session *bao.Session, item spec.Item) (*bao.Secret, error) {
	r.once.Do(func() {
		r.secret, r.err = session.ReadDynamic(ctx, item.Path, item.Data)
	})
	return r.secret, r.err
}
