package webhook

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// BenchmarkAdmission measures one AdmissionReview through the HTTP handler
// (decode, namespace lookup, spec validation, patch, encode) for a pod with
// two init containers, two containers and a secrets annotation, without
// TLS or the network. It reports the median and 99th percentile latency.
func BenchmarkAdmission(b *testing.B) {
	h, _ := newTestHandler(b, testNamespaces)
	body := readFile(b, filepath.Join("testdata", "admission", "init-containers.json"))
	var durations []time.Duration

	b.ReportAllocs()
	for b.Loop() {
		start := time.Now()
		recorder := httptest.NewRecorder()
		request := httptest.NewRequest(http.MethodPost, "/mutate", bytes.NewReader(body))
		request.Header.Set("Content-Type", "application/json")
		h.ServeHTTP(recorder, request)
		durations = append(durations, time.Since(start))

		if recorder.Code != http.StatusOK {
			b.Fatalf("status %d", recorder.Code)
		}
	}
	b.StopTimer()

	slices.Sort(durations)
	percentile := func(p float64) float64 {
		return float64(durations[int(p*float64(len(durations)-1))]) / float64(time.Microsecond)
	}
	b.ReportMetric(percentile(0.50), "p50-µs")
	b.ReportMetric(percentile(0.99), "p99-µs")
}
