package baotest

import (
	"encoding/json"
	"maps"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// defaultMaxVersions is how many versions KV version 2 keeps when neither
// the key nor the mount sets max_versions.
const defaultMaxVersions = 10

// kvBackend is a KV version 2 secrets engine.
type kvBackend struct {
	s    *Server
	path string
	keys map[string]*kvKey
}

type kvKey struct {
	versions       map[int]*kvVersion
	current        int
	oldest         int
	created        time.Time
	updated        time.Time
	maxVersions    int
	casRequired    bool
	customMetadata map[string]string
}

type kvVersion struct {
	data      map[string]any
	created   time.Time
	deletion  time.Time
	destroyed bool
}

func newKVBackend(s *Server, path string) *kvBackend {
	return &kvBackend{s: s, path: path, keys: map[string]*kvKey{}}
}

func (b *kvBackend) route(rest string) *route {
	head, key, _ := strings.Cut(rest, "/")
	exists := func(*request) bool { return b.keys[key] != nil }
	switch head {
	case "data":
		rt := newRoute().
			read(OpKVRead, func(r *request) (*response, error) { return b.readData(r, key) }).
			write(OpKVWrite, func(r *request) (*response, error) { return b.writeData(r, key) }).
			del(OpKVDelete, func(r *request) (*response, error) { return b.deleteLatest(r, key) })
		rt.handlers[opPatch] = handler{op: OpKVWrite, fn: func(*request) (*response, error) {
			return nil, unsupportedByTestServer("PATCH on KV version 2 data")
		}}
		rt.exists = exists
		return rt
	case "metadata":
		rt := newRoute().
			read(OpKVMetadata, func(*request) (*response, error) { return b.readMetadata(key) }).
			list(OpKVList, func(*request) (*response, error) { return listResponse(b.listKeys(key)), nil }).
			write(OpKVMetadata, func(r *request) (*response, error) { return b.writeMetadata(r, key) }).
			del(OpKVDelete, func(*request) (*response, error) { delete(b.keys, key); return nil, nil })
		rt.exists = exists
		return rt
	case "delete", "undelete", "destroy":
		return newRoute().write(OpKVDelete, func(r *request) (*response, error) { return b.changeVersions(r, head, key) })
	case "config":
		return newRoute().read(OpAdmin, func(*request) (*response, error) {
			return &response{data: map[string]any{"cas_required": false, "delete_version_after": "0s", "max_versions": 0}}, nil
		})
	}
	return nil
}

// readData returns a version (the current one unless ?version=N). A
// deleted or destroyed version gives 404 with its metadata, as in OpenBao.
func (b *kvBackend) readData(r *request, key string) (*response, error) {
	k := b.keys[key]
	if k == nil {
		return nil, nil
	}
	n, err := fieldInt(r.data, "version", 0)
	if err != nil {
		return nil, err
	}
	if n <= 0 {
		n = k.current
	}
	v := k.versions[n]
	if v == nil {
		return nil, nil
	}

	data := map[string]any{"data": nil, "metadata": versionMetadata(k, n, v)}
	if v.destroyed || (!v.deletion.IsZero() && !r.now.Before(v.deletion)) {
		return &response{status: http.StatusNotFound, data: data}, nil
	}
	data["data"] = copyJSON(v.data)
	return &response{data: data}, nil
}

func versionMetadata(k *kvKey, n int, v *kvVersion) map[string]any {
	deletion := ""
	if !v.deletion.IsZero() {
		deletion = formatTime(v.deletion)
	}
	return map[string]any{
		"version":         n,
		"created_time":    formatTime(v.created),
		"deletion_time":   deletion,
		"destroyed":       v.destroyed,
		"custom_metadata": nilIfEmpty(k.customMetadata),
	}
}

// writeData stores a new version, honouring options.cas.
func (b *kvBackend) writeData(r *request, key string) (*response, error) {
	if key == "" {
		return nil, badRequest("missing path")
	}
	raw, ok := r.data["data"]
	if !ok {
		return nil, badRequest("no data provided")
	}
	data, ok := raw.(map[string]any)
	if !ok {
		return nil, conversionError("data", raw, "map")
	}

	k := b.keys[key]
	if k == nil {
		k = &kvKey{versions: map[int]*kvVersion{}, created: r.now}
	}
	if err := checkCAS(r.data, k); err != nil {
		return nil, err
	}

	k.current++
	v := &kvVersion{data: copyJSON(data).(map[string]any), created: r.now}
	k.versions[k.current] = v
	k.updated = r.now
	if k.oldest == 0 {
		k.oldest = 1
	}
	k.trim()
	b.keys[key] = k
	return &response{data: versionMetadata(k, k.current, v)}, nil
}

func checkCAS(data map[string]any, k *kvKey) error {
	options, _, err := fieldMap(data, "options")
	if err != nil {
		return err
	}
	raw, ok := options["cas"]
	if !ok {
		if k.casRequired {
			return badRequest("check-and-set parameter required for this call")
		}
		return nil
	}
	cas, err := fieldInt(map[string]any{"cas": raw}, "cas", 0)
	if err != nil {
		return badRequest("error parsing check-and-set parameter")
	}
	if cas != k.current {
		return badRequest("check-and-set parameter did not match the current version")
	}
	return nil
}

// trim drops the oldest versions beyond max_versions.
func (k *kvKey) trim() {
	limit := k.maxVersions
	if limit <= 0 {
		limit = defaultMaxVersions
	}
	for k.current-k.oldest+1 > limit {
		delete(k.versions, k.oldest)
		k.oldest++
	}
}

// deleteLatest soft-deletes the current version.
func (b *kvBackend) deleteLatest(r *request, key string) (*response, error) {
	k := b.keys[key]
	if k == nil {
		return nil, nil
	}
	if v := k.versions[k.current]; v != nil && v.deletion.IsZero() && !v.destroyed {
		v.deletion = r.now
	}
	return nil, nil
}

// changeVersions serves delete/, undelete/ and destroy/ with {"versions": [...]}.
func (b *kvBackend) changeVersions(r *request, action, key string) (*response, error) {
	numbers, _, err := fieldStrings(r.data, "versions")
	if err != nil {
		return nil, err
	}
	if len(numbers) == 0 {
		return nil, badRequest("no version number provided")
	}
	k := b.keys[key]
	if k == nil {
		return nil, nil
	}

	for _, text := range numbers {
		n, err := strconv.Atoi(text)
		if err != nil {
			return nil, conversionError("versions", text, "int")
		}
		v := k.versions[n]
		if v == nil || v.destroyed {
			continue
		}
		switch action {
		case "delete":
			if v.deletion.IsZero() {
				v.deletion = r.now
			}
		case "undelete":
			v.deletion = time.Time{}
		case "destroy":
			v.destroyed, v.data = true, nil
		}
	}
	return nil, nil
}

func (b *kvBackend) readMetadata(key string) (*response, error) {
	k := b.keys[key]
	if k == nil {
		return nil, nil
	}
	versions := map[string]any{}
	for n, v := range k.versions {
		meta := versionMetadata(k, n, v)
		delete(meta, "version")
		delete(meta, "custom_metadata")
		versions[strconv.Itoa(n)] = meta
	}
	return &response{data: map[string]any{
		"cas_required":         k.casRequired,
		"created_time":         formatTime(k.created),
		"current_version":      k.current,
		"custom_metadata":      nilIfEmpty(k.customMetadata),
		"delete_version_after": "0s",
		"max_versions":         k.maxVersions,
		"oldest_version":       k.oldest,
		"updated_time":         formatTime(k.updated),
		"versions":             versions,
	}}, nil
}

func (b *kvBackend) writeMetadata(r *request, key string) (*response, error) {
	if d, ok, err := fieldDuration(r.data, "delete_version_after"); err != nil {
		return nil, err
	} else if ok && d != 0 {
		return nil, unsupportedByTestServer("delete_version_after")
	}
	k := b.keys[key]
	if k == nil {
		k = &kvKey{versions: map[int]*kvVersion{}, created: r.now, updated: r.now}
	}

	var err error
	if k.maxVersions, err = fieldInt(r.data, "max_versions", k.maxVersions); err != nil {
		return nil, err
	}
	if k.casRequired, err = fieldBool(r.data, "cas_required", k.casRequired); err != nil {
		return nil, err
	}
	if custom, ok, err := fieldStringMap(r.data, "custom_metadata"); err != nil {
		return nil, err
	} else if ok {
		k.customMetadata = maps.Clone(custom)
	}
	k.trim()
	b.keys[key] = k
	return nil, nil
}

// listKeys returns the names directly below prefix, folders with a
// trailing "/".
func (b *kvBackend) listKeys(prefix string) []string {
	if prefix != "" && !strings.HasSuffix(prefix, "/") {
		prefix += "/"
	}
	set := map[string]bool{}
	for key := range b.keys {
		rest, ok := strings.CutPrefix(key, prefix)
		if !ok || rest == "" {
			continue
		}
		if i := strings.Index(rest, "/"); i >= 0 {
			rest = rest[:i+1]
		}
		set[rest] = true
	}
	return sortedKeys(set)
}

// copyJSON deep-copies decoded JSON so callers cannot alias stored data.
func copyJSON(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, item := range t {
			out[k] = copyJSON(item)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, item := range t {
			out[i] = copyJSON(item)
		}
		return out
	case json.Number, string, bool, nil:
		return t
	default:
		return t
	}
}
