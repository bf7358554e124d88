package sovereignty

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"testing"
)

// BenchmarkScanStream measures the scan rate over random data for a run's
// typical number of values; each value has eight encodings.
func BenchmarkScanStream(b *testing.B) {
	for _, count := range []int{10, 100} {
		b.Run(fmt.Sprintf("%d values", count), func(b *testing.B) {
			values := make([]Value, count)
			for i := range values {
				values[i] = Value{Label: fmt.Sprintf("value %d", i), Data: []byte("phc-" + rand.Text())}
			}
			s, err := NewScanner(values)
			if err != nil {
				b.Fatal(err)
			}
			data := make([]byte, 8<<20)
			if _, err := rand.Read(data); err != nil {
				b.Fatal(err)
			}
			b.SetBytes(int64(len(data)))
			b.ResetTimer()
			for b.Loop() {
				if _, _, err := s.ScanStream(SourceFile, "random", bytes.NewReader(data)); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
