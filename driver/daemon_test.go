package driver

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/phantom-sec/phantom/pkg/baotest"
	"github.com/phantom-sec/phantom/pkg/state"
)

var (
	buildOnce sync.Once
	buildErr  error
)

// nodeBinary builds cmd/phantom-node once per test run.
func nodeBinary(t testing.TB) string {
	t.Helper()
	path := filepath.Join(binDir, "phantom-node")
	buildOnce.Do(func() {
		out, err := exec.Command("go", "build", "-o", path, "github.com/phantom-sec/phantom/cmd/phantom-node").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build phantom-node: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return path
}

// daemon is a phantom-node process started by a test.
type daemon struct {
	cmd    *exec.Cmd
	out    *lockedBuffer
	conn   *grpc.ClientConn
	client csi.NodeClient
	done   chan struct{}
}

// startDaemon runs the real binary against the harness's OpenBao, state
// directory and keyring key. The in-process driver must be stopped.
func (h *harness) startDaemon(t testing.TB, extra ...string) *daemon {
	t.Helper()
	jwksFile := filepath.Join(h.root, "jwks.json")
	must(t, os.WriteFile(jwksFile, h.issuer.JWKS(), 0o600))
	socket := filepath.Join(h.root, "csi-"+strconv.Itoa(int(time.Now().UnixNano()%1e6))+".sock")
	args := append([]string{
		"--endpoint", "unix://" + socket, "--node-id", testNode, "--openbao-addr", h.bao.URL(),
		"--token-audience", testAudience, "--metrics-addr", "", "--registration-dir", "",
		"--state-dir", h.stateDir, "--keyring-key-name", h.keyName, "--log-level", "debug",
		"--service-account-jwks-file", jwksFile, "--service-account-issuer", testIssuer,
	}, extra...)

	d := &daemon{out: &lockedBuffer{}, done: make(chan struct{})}
	d.cmd = exec.Command(nodeBinary(t), args...)
	d.cmd.Stdout, d.cmd.Stderr = d.out, d.out
	d.cmd.Env = append(os.Environ(), "KUBERNETES_SERVICE_HOST=")
	must(t, d.cmd.Start())
	go func() { _ = d.cmd.Wait(); close(d.done) }()
	t.Cleanup(func() { d.kill(t) })

	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	must(t, err)
	d.conn, d.client = conn, csi.NewNodeClient(conn)
	ident := csi.NewIdentityClient(conn)
	deadline := time.Now().Add(20 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		resp, err := ident.Probe(ctx, &csi.ProbeRequest{})
		cancel()
		if err == nil && resp.GetReady().GetValue() {
			return d
		}
		if time.Now().After(deadline) {
			t.Fatalf("phantom-node not ready after 20s: %v\n%s", err, d.out)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill sends SIGKILL to the daemon's own process id and waits for it.
func (d *daemon) kill(t testing.TB) {
	select {
	case <-d.done:
		return
	default:
	}
	if err := syscall.Kill(d.cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Errorf("kill -9 phantom-node %d: %v", d.cmd.Process.Pid, err)
	}
	<-d.done
	d.conn.Close()
}

func (d *daemon) publish(req *csi.NodePublishVolumeRequest) error {
	_ = os.MkdirAll(filepath.Dir(req.TargetPath), 0o750)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	_, err := d.client.NodePublishVolume(ctx, req)
	return err
}

// followRealTime keeps the harness clock on the wall clock, for a daemon
// that runs on real time.
func (h *harness) followRealTime(t testing.TB) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	h.clock.Set(time.Now())
	go func() {
		for ctx.Err() == nil {
			h.clock.Set(time.Now())
			time.Sleep(5 * time.Millisecond)
		}
	}()
}

// TestKillDuringPublish kills the daemon with SIGKILL at points spread over
// a slow publish, restarts it and publishes again: never a stacked mount,
// and the volume ends with its files.
func TestKillDuringPublish(t *testing.T) {
	h := newHarness(t)
	h.stop()
	h.followRealTime(t)
	p := newPod("payments", "api")
	req := h.request(p, paymentsSecrets)

	for _, after := range []time.Duration{0, 150 * time.Millisecond, 450 * time.Millisecond, 750 * time.Millisecond, 1200 * time.Millisecond} {
		d := h.startDaemon(t)
		h.bao.SetLatency(300 * time.Millisecond) // login and read: about 600 ms
		result := make(chan error, 1)
		go func() { result <- d.publish(h.republishRequest(req, p)) }()
		time.Sleep(after)
		d.kill(t)
		<-result
		h.bao.SetLatency(0)
		if n := mountCount(t, req.TargetPath); n > 1 {
			t.Fatalf("kill after %v: %d mounts at the target", after, n)
		}

		restarted := h.startDaemon(t)
		must(t, restarted.publish(h.republishRequest(req, p)))
		if n := mountCount(t, req.TargetPath); n != 1 {
			t.Errorf("kill after %v, restart and publish: %d mounts at the target, want 1", after, n)
		}
		if got := readFile(t, filepath.Join(req.TargetPath, "db-password")); got != "s3cret-one" {
			t.Errorf("kill after %v: db-password = %q, want s3cret-one", after, got)
		}
		restarted.kill(t)
	}
}

// TestKillDuringRotation kills the daemon repeatedly while a short lease is
// renewed and replaced, with every OpenBao request slowed down. After each
// restart the mount count stays one, and once OpenBao is fast again the
// daemon holds a live lease and keeps rotating.
func TestKillDuringRotation(t *testing.T) {
	h := newHarness(t)
	h.stop()
	h.followRealTime(t)
	ctx := context.Background()
	must(t, baotest.EnableDatabase(ctx, h.admin, "database", baotest.DatabaseConnection{}))
	must(t, baotest.WriteDatabaseRole(ctx, h.admin, "database", "payments", baotest.DatabaseRole{DefaultTTL: 6 * time.Second, MaxTTL: 8 * time.Second}))
	p := newPod("payments", "api")
	req := h.request(p, dbSecrets)

	d := h.startDaemon(t)
	must(t, d.publish(req))
	for round := range 3 {
		h.bao.SetLatency(700 * time.Millisecond)
		time.Sleep(2500 * time.Millisecond)
		d.kill(t)
		if n := mountCount(t, req.TargetPath); n != 1 {
			t.Fatalf("round %d: %d mounts after kill -9, want 1", round, n)
		}
		d = h.startDaemon(t)
		must(t, d.publish(h.republishRequest(req, p)))
	}

	h.bao.SetLatency(0)
	h.bao.ResetCounts()
	index, err := state.Open(filepath.Join(h.stateDir, "volumes"))
	must(t, err)
	deadline := time.Now().Add(20 * time.Second)
	for {
		must(t, d.publish(h.republishRequest(req, p)))
		if h.bao.Count(baotest.OpDynamicRead) > 0 && liveLease(h.bao, index) {
			break
		}
		if time.Now().After(deadline) {
			records, _ := index.List()
			t.Fatalf("no rotation with a live lease 20s after the last restart (issued %d, index %s)\n%s",
				h.bao.Count(baotest.OpDynamicRead), describeLeases(h.bao, records), d.out)
		}
		time.Sleep(500 * time.Millisecond)
	}
	if n := mountCount(t, req.TargetPath); n != 1 {
		t.Errorf("mounts at the end = %d, want 1", n)
	}
	if got := readFile(t, filepath.Join(req.TargetPath, "db.json")); !strings.Contains(got, `"password"`) {
		t.Errorf("db.json = %d bytes without credentials", len(got))
	}
}

// liveLease reports whether the index's only volume holds a lease that is
// active at the server.
func liveLease(server *baotest.Server, index *state.Store) bool {
	records, err := index.List()
	if err != nil || len(records) != 1 {
		return false
	}
	for _, l := range records[0].Leases {
		if info, ok := server.Lease(l.ID); ok && !info.Revoked && !l.Retired {
			return true
		}
	}
	return false
}

func describeLeases(server *baotest.Server, records []*state.Record) string {
	var b strings.Builder
	for _, r := range records {
		for _, l := range r.Leases {
			info, ok := server.Lease(l.ID)
			fmt.Fprintf(&b, "[lease issued %s expires %s capped %v retired %v; at server found %v revoked %v] ",
				l.Issued.Format(time.StampMilli), l.Expires.Format(time.StampMilli), l.Capped, l.Retired, ok, info.Revoked)
		}
	}
	return b.String()
}
