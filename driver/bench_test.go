package driver

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/phantom-sec/phantom/pkg/baotest"
	"github.com/phantom-sec/phantom/pkg/tmpfs"
)

// BenchmarkPublish measures NodePublishVolume over the real gRPC socket with
// real tmpfs mounts against the in-process OpenBao test server. Warm
// publishes are of a service account already seen (cached session and
// copies); cold ones of a new service account each time. The floor,
// measured in the same run, mounts a tmpfs and writes the same files
// directly, with no RPC and no OpenBao. Each sub-benchmark reports
// p50 and p99 in milliseconds and p50 as a ratio of the floor's p50.
func BenchmarkPublish(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("needs root to mount tmpfs")
	}
	h := newHarness(b)
	const secrets = "- path: payments/db\n  field: password\n- path: payments/db\n  dir: db"

	var floorP50 float64
	b.Run("floor", func(b *testing.B) {
		files := []tmpfs.File{{Path: "password", Data: []byte("s3cret-one")}, {Path: "db/password", Data: []byte("s3cret-one")}, {Path: "db/username", Data: []byte("app")}}
		var durations []time.Duration
		for i := 0; b.Loop(); i++ {
			target := filepath.Join(h.root, "floor", fmt.Sprint(i), "mount")
			_ = os.MkdirAll(filepath.Dir(target), 0o750)
			start := time.Now()
			if _, err := h.mounter.Mount(target, tmpfs.MountOptions{SizeBytes: 1 << 20}); err != nil {
				b.Fatal(err)
			}
			if _, err := h.mounter.WriteFiles(target, files, tmpfs.WriteOptions{MaxBytes: 1 << 20}, false); err != nil {
				b.Fatal(err)
			}
			durations = append(durations, time.Since(start))
			if err := h.mounter.Unmount(target); err != nil {
				b.Fatal(err)
			}
		}
		floorP50 = report(b, durations, 0)
	})

	b.Run("sequential-warm", func(b *testing.B) {
		must(b, h.publish(h.request(newPod("payments", "api"), secrets))) // log in once
		h.bao.ResetCounts()
		defer reportRequests(b, h)
		var durations []time.Duration
		for b.Loop() {
			req := h.request(newPod("payments", "api"), secrets)
			start := time.Now()
			must(b, h.publish(req))
			durations = append(durations, time.Since(start))
			must(b, h.unpublish(req))
		}
		report(b, durations, floorP50)
	})

	b.Run("sequential-cold", func(b *testing.B) {
		h.bao.ResetCounts()
		defer reportRequests(b, h)
		var durations []time.Duration
		for i := 0; b.Loop(); i++ {
			// A new service account each time: every publish logs in.
			req := h.request(newPod("payments", fmt.Sprintf("cold-%d-%d", b.N, i)), secrets)
			req.VolumeContext["role"] = "payments-api"
			start := time.Now()
			must(b, h.publish(req))
			durations = append(durations, time.Since(start))
			must(b, h.unpublish(req))
		}
		report(b, durations, floorP50)
	})

	for _, pods := range []int{20, 110} {
		b.Run(fmt.Sprintf("concurrent-%d", pods), func(b *testing.B) {
			var durations []time.Duration
			var mu sync.Mutex
			for b.Loop() {
				reqs := make([]*csi.NodePublishVolumeRequest, pods)
				var wg sync.WaitGroup
				for i := range pods {
					req := h.request(newPod("payments", "api"), secrets)
					reqs[i] = req
					wg.Go(func() {
						start := time.Now()
						err := h.publish(req)
						mu.Lock()
						durations = append(durations, time.Since(start))
						mu.Unlock()
						if err != nil {
							b.Error(err)
						}
					})
				}
				wg.Wait()
				for _, r := range reqs {
					must(b, h.unpublish(r))
				}
			}
			report(b, durations, floorP50)
		})
	}
}

// reportRequests reports the logins and KV reads per publish that reached
// OpenBao since the counters were reset.
func reportRequests(b *testing.B, h *harness) {
	b.ReportMetric(float64(h.bao.Count(baotest.OpLogin))/float64(b.N), "logins/op")
	b.ReportMetric(float64(h.bao.Count(baotest.OpKVRead))/float64(b.N), "kv-reads/op")
}

// report sets p50 and p99 in milliseconds and, given a floor, p50 as a
// ratio of it. It returns p50 in milliseconds.
func report(b *testing.B, durations []time.Duration, floorP50 float64) float64 {
	if len(durations) == 0 {
		return 0
	}
	slices.Sort(durations)
	pct := func(p float64) float64 {
		return float64(durations[int(p*float64(len(durations)-1))].Microseconds()) / 1000
	}
	p50, p99 := pct(0.50), pct(0.99)
	b.ReportMetric(p50, "p50-ms")
	b.ReportMetric(p99, "p99-ms")
	if floorP50 > 0 {
		b.ReportMetric(p50/floorP50, "p50/floor")
	}
	return p50
}
