package baotest

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"sort"
)

// base62 is the alphabet of token IDs and accessors.
const base62 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"

// randomString returns n characters drawn uniformly from alphabet.
func randomString(n int, alphabet string) string {
	out := make([]byte, n)
	buf := make([]byte, 1)
	limit := 256 - 256%len(alphabet)
	for i := 0; i < n; {
		if _, err := rand.Read(buf); err != nil {
			panic(fmt.Sprintf("baotest: read random bytes: %v", err))
		}
		if int(buf[0]) < limit {
			out[i] = alphabet[int(buf[0])%len(alphabet)]
			i++
		}
	}
	return string(out)
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(fmt.Sprintf("baotest: read random bytes: %v", err))
	}
	return hex.EncodeToString(b)
}

func newTokenID(prefix string) string {
	return prefix + randomString(24, base62)
}

func newAccessor() string {
	return randomString(24, base62)
}

func uniqueSorted(items []string) []string {
	set := map[string]bool{}
	for _, item := range items {
		set[item] = true
	}
	out := sortedKeys(set)
	sort.Strings(out)
	return out
}
