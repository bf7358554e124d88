// Package spec parses and validates the attributes of a Phantom volume: the
// `secrets` list that names which OpenBao paths land in which files, and the
// other `phantom.dev/*` settings a pod may carry.
//
// The admission webhook and the node plugin share this package, so a spec
// that admission accepts is a spec that NodePublishVolume accepts.
package spec

import (
	"errors"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"
)

// Volume attribute keys that Phantom reads from a volume's context. The
// webhook copies pod annotations `phantom.dev/<key>` to these keys.
const (
	AttrSecrets         = "secrets"
	AttrRole            = "role"
	AttrKVMount         = "kvMount"
	AttrFileMode        = "fileMode"
	AttrSizeLimit       = "sizeLimit"
	AttrRefreshInterval = "refreshInterval"
)

// Keys that kubelet adds to the volume context when the CSIDriver sets
// podInfoOnMount and tokenRequests.
const (
	KubeletPodName        = "csi.storage.k8s.io/pod.name"
	KubeletPodNamespace   = "csi.storage.k8s.io/pod.namespace"
	KubeletPodUID         = "csi.storage.k8s.io/pod.uid"
	KubeletServiceAccount = "csi.storage.k8s.io/serviceAccount.name"
	KubeletEphemeral      = "csi.storage.k8s.io/ephemeral"
	KubeletTokens         = "csi.storage.k8s.io/serviceAccount.tokens"
	kubeletPrefix         = "csi.storage.k8s.io/"
)

// AnnotationPrefix is the prefix of the pod annotations the webhook turns into
// volume attributes.
const AnnotationPrefix = "phantom.dev/"

// Item types.
const (
	TypeKV      = "kv"
	TypeDynamic = "dynamic"
)

// Formats of an item without a field.
const (
	FormatFields = "fields"
	FormatJSON   = "json"
)

const (
	// DefaultFileMode is the mode of secret files when neither the volume nor
	// the item sets one: readable by the owner and the pod's fsGroup.
	DefaultFileMode = 0o440

	maxPathLength    = 4096
	maxSegmentLength = 255
	maxItems         = 256
	maxSize          = 1 << 40
)

// ErrInvalid matches every validation error of this package through
// errors.Is.
var ErrInvalid = errors.New("invalid volume attributes")

// Error lists every problem found in a volume's attributes, so a user fixes
// them in one round rather than one per pod start.
type Error struct {
	Problems []string
}

func (e *Error) Error() string {
	return "invalid volume attributes: " + strings.Join(e.Problems, "; ")
}

// Is makes errors.Is(err, ErrInvalid) true.
func (e *Error) Is(target error) bool { return target == ErrInvalid }

var (
	segmentPattern = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
	baoPathPattern = regexp.MustCompile(`^[A-Za-z0-9._+@=:-]+(/[A-Za-z0-9._+@=:-]+)*$`)
)

// Item is one entry of the `secrets` list.
type Item struct {
	// Path is the OpenBao path. For kv items it is relative to the KV v2
	// mount (`payments/db`); for dynamic items it is the full API path
	// (`database/creds/app`, `pki/issue/web`).
	Path string `json:"path"`
	// Type is `kv` (default) or `dynamic`.
	Type string `json:"type,omitempty"`
	// Mount overrides the KV v2 mount of a kv item.
	Mount string `json:"mount,omitempty"`
	// Field selects one field of the secret; it lands in File.
	Field string `json:"field,omitempty"`
	// File is the file name for a field or a json item.
	File string `json:"file,omitempty"`
	// Dir is the directory that receives one file per field when Field is
	// empty and Format is `fields`.
	Dir string `json:"dir,omitempty"`
	// Format is `fields` (default: one file per field) or `json` (one file
	// holding every field) for items without Field.
	Format string `json:"format,omitempty"`
	// Mode is the octal file mode, such as "0400".
	Mode string `json:"mode,omitempty"`
	// Data is sent as the request body of a dynamic item, which turns the
	// read into a write (as `pki/issue/<role>` requires).
	Data map[string]any `json:"data,omitempty"`
}

// Spec is a validated volume specification.
type Spec struct {
	// Items is empty when the volume names no secrets: the node plugin then
	// mounts everything under the default prefix of the pod's identity.
	Items           []Item
	Role            string
	KVMount         string
	FileMode        uint32
	SizeLimit       int64
	RefreshInterval time.Duration
}

// Parse validates the Phantom attributes of a volume context. Keys set by
// kubelet (`csi.storage.k8s.io/*`) are ignored; any other unknown key is an
// error, so a misspelled attribute cannot silently fall back to a default.
func Parse(attrs map[string]string) (*Spec, error) {
	s := &Spec{FileMode: DefaultFileMode}
	var errs []error

	keys := make([]string, 0, len(attrs))
	for k := range attrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)

	for _, key := range keys {
		value := attrs[key]
		switch key {
		case AttrSecrets:
			items, err := ParseSecrets(value)
			if err != nil {
				errs = append(errs, err)
			}
			s.Items = items
		case AttrRole:
			if !baoPathPattern.MatchString(value) || strings.Contains(value, "/") {
				errs = append(errs, invalidf("attribute %q: role %q is not a valid OpenBao role name: use letters, digits, '.', '_' or '-'", key, value))
			}
			s.Role = value
		case AttrKVMount:
			if err := validateBaoPath(value); err != nil {
				errs = append(errs, invalidf("attribute %q: %v", key, err))
			}
			s.KVMount = value
		case AttrFileMode:
			mode, err := parseMode(value)
			if err != nil {
				errs = append(errs, invalidf("attribute %q: %v", key, err))
			}
			s.FileMode = mode
		case AttrSizeLimit:
			size, err := ParseSize(value)
			if err != nil {
				errs = append(errs, invalidf("attribute %q: %v", key, err))
			}
			s.SizeLimit = size
		case AttrRefreshInterval:
			d, err := time.ParseDuration(value)
			if err != nil || d < 10*time.Second {
				errs = append(errs, invalidf("attribute %q: %q is not a duration of at least 10s: use a value such as \"5m\"", key, value))
			}
			s.RefreshInterval = d
		default:
			if strings.HasPrefix(key, kubeletPrefix) {
				continue
			}
			errs = append(errs, invalidf("unknown volume attribute %q: known attributes are %s", key, strings.Join(knownAttributes(), ", ")))
		}
	}

	if err := checkFileNames(s.Items); err != nil {
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return nil, newError(errs)
	}
	return s, nil
}

// ParseSecrets parses and validates the YAML list of the `secrets`
// attribute. Errors name the item by index and path, and the field.
func ParseSecrets(text string) ([]Item, error) {
	if strings.TrimSpace(text) == "" {
		return nil, invalidError("attribute %q is empty: remove it to mount the default prefix, or list at least one item", AttrSecrets)
	}

	var items []Item
	if err := yaml.UnmarshalStrict([]byte(text), &items); err != nil {
		return nil, invalidError("attribute %q is not a valid YAML list of items: %v", AttrSecrets, cleanYAMLError(err))
	}
	if len(items) == 0 {
		return nil, invalidError("attribute %q lists no items: list at least one item with a `path`", AttrSecrets)
	}
	if len(items) > maxItems {
		return nil, invalidError("attribute %q lists %d items, more than the maximum of %d", AttrSecrets, len(items), maxItems)
	}

	var errs []error
	for i := range items {
		if err := normalizeItem(&items[i]); err != nil {
			errs = append(errs, fmt.Errorf("secrets[%d] (path %q): %s", i, items[i].Path, joinMessages(err)))
		}
	}
	if len(errs) > 0 {
		return nil, newError(errs)
	}
	return items, nil
}

// ValidateFileName checks a relative file path for a Phantom volume: no
// absolute path, no `.` or `..` segment, no segment starting with `..`
// (reserved for the atomic swap), and only portable characters.
func ValidateFileName(name string) error {
	if err := validateFileName(name); err != nil {
		return newError([]error{err})
	}
	return nil
}

func validateFileName(name string) error {
	switch {
	case name == "":
		return invalidf("file name is empty: set a relative name such as \"password\"")
	case strings.HasPrefix(name, "/"):
		return invalidf("file name %q is absolute: use a path relative to the volume", name)
	case len(name) > maxPathLength:
		return invalidf("file name of %d bytes is longer than the maximum of %d", len(name), maxPathLength)
	}
	for _, segment := range strings.Split(name, "/") {
		switch {
		case segment == "":
			return invalidf("file name %q has an empty segment: remove the extra '/'", name)
		case segment == "." || segment == "..":
			return invalidf("file name %q contains %q: names must stay inside the volume", name, segment)
		case strings.HasPrefix(segment, ".."):
			return invalidf("file name %q has a segment starting with \"..\", which Phantom reserves for its atomic updates", name)
		case len(segment) > maxSegmentLength:
			return invalidf("file name %q has a segment longer than %d bytes", name, maxSegmentLength)
		case !segmentPattern.MatchString(segment):
			return invalidf("file name %q is not portable: use only letters, digits, '.', '_' and '-' in each segment", name)
		}
	}
	return nil
}

// ParseSize parses a size such as "4Mi", "512Ki", "1G" or "1048576" into
// bytes.
func ParseSize(value string) (int64, error) {
	units := []struct {
		suffix string
		factor int64
	}{
		{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}, {"Ti", 1 << 40},
		{"k", 1000}, {"K", 1000}, {"M", 1000 * 1000}, {"G", 1000 * 1000 * 1000},
	}
	number, factor := value, int64(1)
	for _, u := range units {
		if strings.HasSuffix(value, u.suffix) {
			number, factor = strings.TrimSuffix(value, u.suffix), u.factor
			break
		}
	}
	n, err := strconv.ParseInt(number, 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("%q is not a positive whole number of bytes with an optional suffix Ki, Mi, Gi, Ti, k, M or G: use a value such as \"4Mi\"", value)
	}
	if n > maxSize/factor {
		return 0, fmt.Errorf("%q is more than the maximum size of 1Ti", value)
	}
	return n * factor, nil
}

// ItemMode returns the mode of an item's files: the item's own mode, or
// the volume default.
func (s *Spec) ItemMode(item Item) uint32 {
	if item.Mode == "" {
		return s.FileMode
	}
	mode, _ := parseMode(item.Mode) // validated by ParseSecrets
	return mode
}

func normalizeItem(item *Item) error {
	if item.Type == "" {
		item.Type = TypeKV
	}
	if item.Format == "" && item.Field == "" {
		item.Format = FormatFields
	}

	var errs []error
	if item.Path == "" {
		errs = append(errs, errors.New("field \"path\" is missing: name the OpenBao path to read"))
	} else if err := validateBaoPath(item.Path); err != nil {
		errs = append(errs, fmt.Errorf("field \"path\": %w", err))
	}

	switch item.Type {
	case TypeKV:
		if len(item.Data) > 0 {
			errs = append(errs, errors.New("field \"data\" is only allowed for type \"dynamic\""))
		}
		if item.Mount != "" {
			if err := validateBaoPath(item.Mount); err != nil {
				errs = append(errs, fmt.Errorf("field \"mount\": %w", err))
			}
		}
	case TypeDynamic:
		if item.Mount != "" {
			errs = append(errs, errors.New("field \"mount\" is only allowed for type \"kv\": put the mount in \"path\""))
		}
	default:
		errs = append(errs, fmt.Errorf("field \"type\" is %q: use \"kv\" or \"dynamic\"", item.Type))
	}

	errs = append(errs, checkItemLayout(item)...)
	if item.Mode != "" {
		if _, err := parseMode(item.Mode); err != nil {
			errs = append(errs, fmt.Errorf("field \"mode\": %w", err))
		}
	}
	return errors.Join(errs...)
}

func checkItemLayout(item *Item) []error {
	var errs []error
	switch {
	case item.Field != "":
		if item.Format != "" {
			errs = append(errs, errors.New("field \"format\" applies only to items without \"field\""))
		}
		if item.Dir != "" {
			errs = append(errs, errors.New("field \"dir\" applies only to items without \"field\": use \"file\""))
		}
		if item.File == "" {
			item.File = item.Field
		}
	case item.Format == FormatFields:
		if item.File != "" {
			errs = append(errs, errors.New("field \"file\" needs \"field\" or format \"json\": use \"dir\" to place one file per field"))
		}
	case item.Format == FormatJSON:
		if item.Dir != "" {
			errs = append(errs, errors.New("field \"dir\" does not apply to format \"json\": use \"file\""))
		}
		if item.File == "" {
			item.File = path.Base(item.Path) + ".json"
		}
	default:
		errs = append(errs, fmt.Errorf("field \"format\" is %q: use \"fields\" or \"json\"", item.Format))
	}

	if item.File != "" {
		if err := validateFileName(item.File); err != nil {
			errs = append(errs, fmt.Errorf("field \"file\": %w", err))
		}
	}
	if item.Dir != "" {
		if err := validateFileName(item.Dir); err != nil {
			errs = append(errs, fmt.Errorf("field \"dir\": %w", err))
		}
	}
	return errs
}

// checkFileNames rejects items whose fixed file names collide with each
// other. Names that come from the fields of a secret are only known after
// the read; CheckCollisions covers those at publish time.
func checkFileNames(items []Item) error {
	var names []string
	for _, item := range items {
		if item.File != "" {
			names = append(names, item.File)
		}
	}
	return checkCollisions(names)
}

// CheckCollisions rejects duplicate names and a name that is also a
// directory of another (`db` and `db/password`).
func CheckCollisions(names []string) error {
	if err := checkCollisions(names); err != nil {
		return newError([]error{err})
	}
	return nil
}

func checkCollisions(names []string) error {
	seen := make(map[string]bool, len(names))
	for _, name := range names {
		if seen[name] {
			return invalidf("file name %q is used twice: give each item its own \"file\" or \"dir\"", name)
		}
		seen[name] = true
	}
	for _, name := range names {
		for dir := path.Dir(name); dir != "."; dir = path.Dir(dir) {
			if seen[dir] {
				return invalidf("file name %q is also the directory of %q: rename one of them", dir, name)
			}
		}
	}
	return nil
}

func validateBaoPath(p string) error {
	switch {
	case strings.HasPrefix(p, "/") || strings.HasSuffix(p, "/"):
		return fmt.Errorf("%q must not start or end with '/'", p)
	case len(p) > maxPathLength:
		return fmt.Errorf("path of %d bytes is longer than the maximum of %d", len(p), maxPathLength)
	case !baoPathPattern.MatchString(p):
		return fmt.Errorf("%q is not a valid OpenBao path: use segments of letters, digits and '._+@=:-' separated by '/'", p)
	}
	for _, segment := range strings.Split(p, "/") {
		if segment == "." || segment == ".." {
			return fmt.Errorf("%q contains %q", p, segment)
		}
	}
	return nil
}

func parseMode(value string) (uint32, error) {
	mode, err := strconv.ParseUint(value, 8, 32)
	if err != nil || mode == 0 || mode > 0o777 {
		return 0, fmt.Errorf("%q is not an octal file mode between 0001 and 0777: use a value such as \"0440\"", value)
	}
	if mode&0o111 != 0 {
		return 0, fmt.Errorf("%q sets an execute bit, but Phantom volumes are mounted noexec: use a mode such as \"0440\"", value)
	}
	return uint32(mode), nil
}

func knownAttributes() []string {
	return []string{AttrSecrets, AttrRole, AttrKVMount, AttrFileMode, AttrSizeLimit, AttrRefreshInterval}
}

// cleanYAMLError drops the library's wrapping prefix so the message points
// at the line and the key.
func cleanYAMLError(err error) string {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "error converting YAML to JSON: ")
	msg = strings.TrimPrefix(msg, "error unmarshaling JSON: while decoding JSON: ")
	return msg
}

// joinMessages flattens an errors.Join tree into one line, because kubelet
// shows the message as a single pod event.
func joinMessages(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}

func invalidf(format string, args ...any) error {
	return fmt.Errorf(format, args...)
}

func invalidError(format string, args ...any) *Error {
	return &Error{Problems: []string{fmt.Sprintf(format, args...)}}
}

// newError flattens nested problems, including those of an *Error, into one
// *Error.
func newError(errs []error) *Error {
	e := &Error{}
	for _, err := range errs {
		var inner *Error
		if errors.As(err, &inner) {
			e.Problems = append(e.Problems, inner.Problems...)
			continue
		}
		e.Problems = append(e.Problems, err.Error())
	}
	return e
}
