// Package sovereignty scans where a Kubernetes node keeps data for secret
// values: etcd's keys and values, files on the node's disks, and logs. The
// end-to-end suite uses it to show that no secret Phantom delivered left
// the pods' tmpfs volumes.
//
// A Matcher looks for each value as raw bytes and in the encodings a leak
// would most likely take: standard and URL-safe base64 at every byte
// alignment, and lowercase hex. Reports name values by their labels and
// never contain a value.
package sovereignty

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
)

// MinValueLength is the shortest value a Matcher accepts. Shorter values
// match by chance in large files, and every encoding must keep at least
// prefixLength bytes.
const MinValueLength = 16

// prefixLength is the length of the prefix that indexes patterns.
const prefixLength = 8

// Value is one value to look for.
type Value struct {
	// Label names the value in reports, such as "tenant alpha password".
	Label string
	// Data is the value. It never appears in a report or an error.
	Data []byte
	// Decoy marks a value that the run planted on purpose where a scan
	// must find it, to show that the scan can fail.
	Decoy bool
}

// pattern is one encoding of a value.
type pattern struct {
	value    int // index into Matcher.values
	encoding string
	data     []byte
}

// Matcher finds the patterns of a set of values in byte slices. Its cost
// per scanned byte does not grow with the number of values: a bitmap of
// the first two bytes of every pattern rejects almost every position, and
// a map of eight-byte prefixes finds the candidates at the others.
type Matcher struct {
	values   []Value
	patterns []pattern
	// firstTwo has bit b set when some pattern starts with the two bytes
	// of b, little-endian.
	firstTwo [1 << 16 / 64]uint64
	byPrefix map[uint64][]int
	maxLen   int
}

// NewMatcher returns a Matcher for values. It returns an error for a value
// shorter than MinValueLength or without a label.
func NewMatcher(values []Value) (*Matcher, error) {
	m := &Matcher{values: values, byPrefix: map[uint64][]int{}}
	for i, v := range values {
		if v.Label == "" {
			return nil, fmt.Errorf("value %d has no label", i)
		}
		if len(v.Data) < MinValueLength {
			return nil, fmt.Errorf("value %q is %d bytes, shorter than the minimum of %d", v.Label, len(v.Data), MinValueLength)
		}
		for _, p := range encodings(v.Data) {
			m.add(pattern{value: i, encoding: p.encoding, data: p.data})
		}
	}
	return m, nil
}

func (m *Matcher) add(p pattern) {
	idx := len(m.patterns)
	m.patterns = append(m.patterns, p)
	first := binary.LittleEndian.Uint16(p.data)
	m.firstTwo[first/64] |= 1 << (first % 64)
	prefix := binary.LittleEndian.Uint64(p.data)
	m.byPrefix[prefix] = append(m.byPrefix[prefix], idx)
	m.maxLen = max(m.maxLen, len(p.data))
}

// Values returns the values the matcher looks for.
func (m *Matcher) Values() []Value {
	return m.values
}

// encodings returns the raw value and its encodings. A base64 encoding of
// a value embedded in a longer byte string depends on the value's offset
// modulo 3; for each offset only the characters that no neighbouring byte
// influences are kept.
func encodings(data []byte) []pattern {
	out := []pattern{
		{encoding: "raw", data: data},
		{encoding: "hex", data: []byte(hex.EncodeToString(data))},
	}
	for _, enc := range []struct {
		name string
		enc  *base64.Encoding
	}{{"base64", base64.StdEncoding}, {"base64url", base64.URLEncoding}} {
		for offset := range 3 {
			padded := append(make([]byte, offset), data...)
			text := enc.enc.EncodeToString(padded)
			// Characters before skip mix in the filler bytes; characters
			// from end on mix in the bytes after the value.
			skip := []int{0, 2, 3}[offset]
			end := len(padded) * 8 / 6
			out = append(out, pattern{encoding: fmt.Sprintf("%s+%d", enc.name, offset), data: []byte(text[skip:end])})
		}
	}
	return out
}

// Match is one value found.
type Match struct {
	Label    string
	Encoding string
	Decoy    bool
}

// find calls found with the index of every pattern that occurs in buf.
func (m *Matcher) find(buf []byte, found func(pattern int)) {
	for i := 0; i+prefixLength <= len(buf); i++ {
		first := binary.LittleEndian.Uint16(buf[i:])
		if m.firstTwo[first/64]&(1<<(first%64)) == 0 {
			continue
		}
		for _, idx := range m.byPrefix[binary.LittleEndian.Uint64(buf[i:])] {
			if bytes.HasPrefix(buf[i:], m.patterns[idx].data) {
				found(idx)
			}
		}
	}
}

// Find returns the values that occur in data, each once per encoding.
func (m *Matcher) Find(data []byte) []Match {
	seen := map[int]bool{}
	m.find(data, func(idx int) { seen[idx] = true })
	return m.matches(seen)
}

func (m *Matcher) matches(seen map[int]bool) []Match {
	var out []Match
	for idx := range m.patterns {
		if !seen[idx] {
			continue
		}
		p := m.patterns[idx]
		v := m.values[p.value]
		out = append(out, Match{Label: v.Label, Encoding: p.encoding, Decoy: v.Decoy})
	}
	return out
}
