package driver

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"

	"github.com/phantom-sec/phantom/pkg/baotest"
	"github.com/phantom-sec/phantom/pkg/spec"
)

// BenchmarkDaemon runs the real phantom-node binary and reports its
// resident memory (VmRSS), idle and with 110 volumes. One b.Loop iteration
// is a round of 110 republishes with nothing due, so no OpenBao request.
// Then it counts the OpenBao requests of a steady state: 110 volumes of 11
// service accounts with two shared KV secrets each, republished every 2 s
// for 20 s, with a refresh interval of 10 s. The requests per refresh
// interval are also scaled to a minute at the default interval of 5 min.
func BenchmarkDaemon(b *testing.B) {
	h := newHarness(b)
	h.stop()
	h.followRealTime(b)
	h.writeKV("payments/api-key", map[string]any{"key": "k-1"})
	d := h.startDaemon(b, "--refresh-interval", "10s", "--log-level", "warn")
	time.Sleep(time.Second)
	idle := rssMiB(b, d.cmd.Process.Pid)

	type volumeReq struct {
		p   pod
		req *csi.NodePublishVolumeRequest
	}
	var volumes []volumeReq
	for i := range 110 {
		p := newPod("payments", saName(i%11))
		req := h.request(p, twoSecrets)
		req.VolumeContext[spec.AttrRole] = "payments-api"
		must(b, d.publish(req))
		volumes = append(volumes, volumeReq{p, req})
	}
	// republishAll republishes every volume with a fresh token and returns
	// the time spent in the calls, without signing the tokens.
	republishAll := func() time.Duration {
		var spent time.Duration
		for _, v := range volumes {
			req := h.republishRequest(v.req, v.p)
			start := time.Now()
			must(b, d.publish(req))
			spent += time.Since(start)
		}
		return spent
	}
	loaded := rssMiB(b, d.cmd.Process.Pid)

	var spent time.Duration
	rounds := 0
	for b.Loop() {
		spent += republishAll()
		rounds++
	}

	h.bao.ResetCounts()
	const window, interval = 20 * time.Second, 10 * time.Second
	for end := time.Now().Add(window); time.Now().Before(end); time.Sleep(2 * time.Second) {
		republishAll()
	}
	perInterval := float64(totalRequests(h.bao)) / float64(window/interval)
	b.ReportMetric(perInterval, "openbao-req/refresh")
	b.ReportMetric(perInterval/5, "openbao-req/min@5m")
	b.ReportMetric(float64(h.bao.Count(baotest.OpKVRead))/float64(window/interval), "kv-reads/refresh")
	b.ReportMetric(float64(spent.Microseconds())/1000/float64(rounds), "republish-110-ms")
	b.ReportMetric(idle, "rss-idle-MiB")
	b.ReportMetric(loaded, "rss-110-MiB")
	b.ReportMetric(rssMiB(b, d.cmd.Process.Pid), "rss-110-after-MiB")
}

// rssMiB reads VmRSS of a process from /proc/<pid>/status.
func rssMiB(tb testing.TB, pid int) float64 {
	tb.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	must(tb, err)
	defer f.Close()
	scanner := bufio.NewScanner(f)
	for scanner.Scan() {
		if rest, ok := strings.CutPrefix(scanner.Text(), "VmRSS:"); ok {
			kib, err := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			must(tb, err)
			return kib / 1024
		}
	}
	tb.Fatalf("no VmRSS in /proc/%d/status", pid)
	return 0
}
