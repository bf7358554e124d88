package baotest

import (
	"encoding/json"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Request bodies are decoded with json.Number. The field helpers accept the
// same loose forms as OpenBao's framework. Numbers may be JSON numbers or
// strings, and lists JSON arrays or comma-separated strings. Durations may
// be seconds or Go duration strings, with "d" for days.

// fieldString returns data[key] as a string. Numbers and booleans are
// formatted, a missing key gives "".
func fieldString(data map[string]any, key string) (string, error) {
	switch v := data[key].(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	case json.Number:
		return v.String(), nil
	case bool:
		return strconv.FormatBool(v), nil
	default:
		return "", conversionError(key, v, "string")
	}
}

// fieldStrings returns data[key] as a list of strings. A string is split on
// commas, and empty items are dropped.
func fieldStrings(data map[string]any, key string) ([]string, bool, error) {
	raw, ok := data[key]
	if !ok || raw == nil {
		return nil, ok, nil
	}

	var items []string
	switch v := raw.(type) {
	case string:
		items = strings.Split(v, ",")
	case []any:
		for _, item := range v {
			s, err := fieldString(map[string]any{key: item}, key)
			if err != nil {
				return nil, true, err
			}
			items = append(items, s)
		}
	default:
		return nil, true, conversionError(key, v, "slice")
	}

	out := make([]string, 0, len(items))
	for _, item := range items {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out, true, nil
}

// fieldBool returns data[key] as a boolean, def when the key is missing.
func fieldBool(data map[string]any, key string, def bool) (bool, error) {
	switch v := data[key].(type) {
	case nil:
		return def, nil
	case bool:
		return v, nil
	case string:
		b, err := strconv.ParseBool(v)
		if err != nil {
			return false, conversionError(key, v, "bool")
		}
		return b, nil
	case json.Number:
		return v.String() != "0", nil
	default:
		return false, conversionError(key, v, "bool")
	}
}

// fieldInt returns data[key] as an integer, def when the key is missing.
func fieldInt(data map[string]any, key string, def int) (int, error) {
	switch v := data[key].(type) {
	case nil:
		return def, nil
	case json.Number:
		n, err := strconv.Atoi(v.String())
		if err != nil {
			return 0, conversionError(key, v, "int")
		}
		return n, nil
	case string:
		if v == "" {
			return def, nil
		}
		n, err := strconv.Atoi(v)
		if err != nil {
			return 0, conversionError(key, v, "int")
		}
		return n, nil
	default:
		return 0, conversionError(key, v, "int")
	}
}

// fieldDuration returns data[key] as a duration: plain numbers are seconds,
// strings may also be Go durations ("15m") or days ("2d").
func fieldDuration(data map[string]any, key string) (time.Duration, bool, error) {
	raw, ok := data[key]
	if !ok || raw == nil {
		return 0, false, nil
	}

	var text string
	switch v := raw.(type) {
	case json.Number:
		text = v.String()
	case string:
		text = v
	default:
		return 0, true, conversionError(key, v, "duration")
	}

	d, err := parseDuration(text)
	if err != nil {
		return 0, true, conversionError(key, text, "duration")
	}
	return d, true, nil
}

// parseDuration parses seconds, Go durations and whole days.
func parseDuration(text string) (time.Duration, error) {
	text = strings.TrimSpace(text)
	if text == "" {
		return 0, nil
	}
	if n, err := strconv.ParseInt(text, 10, 64); err == nil {
		return time.Duration(n) * time.Second, nil
	}
	if days, ok := strings.CutSuffix(text, "d"); ok {
		n, err := strconv.ParseInt(days, 10, 64)
		if err != nil {
			return 0, err
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	return time.ParseDuration(text)
}

// fieldMap returns data[key] as a JSON object.
func fieldMap(data map[string]any, key string) (map[string]any, bool, error) {
	raw, ok := data[key]
	if !ok || raw == nil {
		return nil, ok, nil
	}
	m, isMap := raw.(map[string]any)
	if !isMap {
		return nil, true, conversionError(key, raw, "map")
	}
	return m, true, nil
}

// fieldStringMap returns data[key] as a JSON object whose values are strings.
func fieldStringMap(data map[string]any, key string) (map[string]string, bool, error) {
	m, ok, err := fieldMap(data, key)
	if err != nil || m == nil {
		return nil, ok, err
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		s, isString := v.(string)
		if !isString {
			return nil, true, conversionError(key, v, "map of strings")
		}
		out[k] = s
	}
	return out, true, nil
}

// conversionError reports a type mismatch with the field name and the
// expected and actual types. Unlike OpenBao's field decoder it leaves the
// input value out, because the value may be a secret.
func conversionError(key string, value any, want string) error {
	return badRequest("error converting input for field %q: expected %s, got %T", key, want, value)
}

// sortedKeys returns the keys of m in ascending order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// seconds converts d to whole seconds for JSON bodies.
func seconds(d time.Duration) int64 {
	return int64(d / time.Second)
}

// humanDuration prints d without zero minute or second parts ("1h", "5m59s"),
// as OpenBao does in its TTL warnings.
func humanDuration(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if i := strings.Index(s, "h0m"); i > 0 {
		s = s[:i+1] + s[i+3:]
	}
	return s
}

// formatTime renders t as OpenBao does in JSON bodies.
func formatTime(t time.Time) string {
	return t.UTC().Format(time.RFC3339Nano)
}
