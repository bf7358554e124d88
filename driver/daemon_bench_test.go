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
// resident memory (VmRSS) idle and with 110 volumes, the time of a round
// of 110 republishes (one b.Loop iteration; nothing is due, so no OpenBao
// request), and the OpenBao requests of a steady state: 110 volumes of 11
// service accounts, two shared KV secrets each, republished every 2 s for
// 20 s with a refresh interval of 10 s. The requests per refresh interval
// are also scaled to a minute at the default refresh interval of 5 min.
func BenchmarkDaemon(b *testing.B) {
	h := newHarness(b)
	h.stop()
	h.followRealTime(b)
	h.writeKV("payments/api-key", map[string]any{"key": "k-1"})
	d := h.startDaemon(b, "--refresh-interval", "10s", "--log-level", "warn")
	time.Sleep(time.Second)
	b.ReportMetric(rssMiB(b, d.cmd.Process.Pid), "rss-idle-MiB")

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
	republishAll := func() {
		for _, v := range volumes {
			must(b, d.publish(h.republishRequest(v.req, v.p)))
		}
	}
	b.ReportMetric(rssMiB(b, d.cmd.Process.Pid), "rss-110-MiB")

	start := time.Now()
	rounds := 0
	for b.Loop() {
		republishAll()
		rounds++
	}
	b.ReportMetric(float64(time.Since(start).Milliseconds())/float64(rounds), "republish-110-ms")

	h.bao.ResetCounts()
	const window, interval = 20 * time.Second, 10 * time.Second
	for end := time.Now().Add(window); time.Now().Before(end); time.Sleep(2 * time.Second) {
		republishAll()
	}
	perInterval := float64(totalRequests(h.bao)) / float64(window/interval)
	b.ReportMetric(perInterval, "openbao-req/refresh")
	b.ReportMetric(perInterval/5, "openbao-req/min@5m")
	b.ReportMetric(float64(h.bao.Count(baotest.OpKVRead))/float64(window/interval), "kv-reads/refresh")
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
