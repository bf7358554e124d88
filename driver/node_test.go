package driver

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/phantom-sec/phantom/pkg/baotest"
	"github.com/phantom-sec/phantom/pkg/spec"
)

const paymentsSecrets = `
- path: payments/db
  field: password
  file: db-password
  mode: "0400"
- path: payments/db
  dir: db
`

func TestPublishWritesFiles(t *testing.T) {
	h := newHarness(t)
	p := newPod("payments", "api")
	req := h.request(p, paymentsSecrets)
	req.VolumeCapability.GetMount().VolumeMountGroup = "2000"

	must(t, h.publish(req))

	if got := readFile(t, filepath.Join(req.TargetPath, "db-password")); got != "s3cret-one" {
		t.Errorf("db-password = %q, want s3cret-one", got)
	}
	if got := readFile(t, filepath.Join(req.TargetPath, "db", "username")); got != "app" {
		t.Errorf("db/username = %q, want app", got)
	}
	for name, wantMode := range map[string]os.FileMode{"db-password": 0o400, "db/password": 0o440, "db/username": 0o440} {
		info, err := os.Stat(filepath.Join(req.TargetPath, name))
		if err != nil {
			t.Fatalf("stat %s: %v", name, err)
		}
		if info.Mode().Perm() != wantMode {
			t.Errorf("%s mode = %o, want %o", name, info.Mode().Perm(), wantMode)
		}
		if gid := info.Sys().(*syscall.Stat_t).Gid; gid != 2000 {
			t.Errorf("%s gid = %d, want the volume mount group 2000", name, gid)
		}
	}

	line := mountInfo(t, req.TargetPath)
	for _, opt := range []string{"nosuid", "nodev", "noexec"} {
		if !strings.Contains(line, opt) {
			t.Errorf("mountinfo line %q lacks %s", line, opt)
		}
	}
	if !strings.Contains(line, " tmpfs ") {
		t.Errorf("mountinfo line %q is not a tmpfs", line)
	}
}

func TestRepublishRefreshesWithoutStacking(t *testing.T) {
	h := newHarness(t)
	p := newPod("payments", "api")
	req := h.request(p, paymentsSecrets)
	req.Readonly = true

	must(t, h.publish(req))
	h.writeKV("payments/db", map[string]any{"username": "app", "password": "s3cret-two"})
	must(t, h.publish(h.republishRequest(req, p)))
	if got := readFile(t, filepath.Join(req.TargetPath, "db-password")); got != "s3cret-one" {
		t.Errorf("db-password after an early republish = %q, want s3cret-one until the refresh is due", got)
	}
	h.clock.Advance(DefaultRefreshInterval)
	must(t, h.publish(h.republishRequest(req, p)))
	must(t, h.publish(h.republishRequest(req, p)))

	if got := readFile(t, filepath.Join(req.TargetPath, "db-password")); got != "s3cret-two" {
		t.Errorf("db-password after republish = %q, want s3cret-two", got)
	}
	if n := mountCount(t, req.TargetPath); n != 1 {
		t.Errorf("mounts at target = %d, want 1", n)
	}
	if !strings.Contains(mountInfo(t, req.TargetPath), " ro,") {
		t.Errorf("read-only volume is mounted rw: %s", mountInfo(t, req.TargetPath))
	}
	if err := os.WriteFile(filepath.Join(req.TargetPath, "x"), nil, 0o600); !errors.Is(err, syscall.EROFS) {
		t.Errorf("write into read-only volume = %v, want EROFS", err)
	}
}

func TestUnpublishIsIdempotent(t *testing.T) {
	h := newHarness(t)
	req := h.request(newPod("payments", "api"), paymentsSecrets)
	must(t, h.publish(req))

	for i := range 2 {
		if err := h.unpublish(req); err != nil {
			t.Fatalf("unpublish #%d: %v", i+1, err)
		}
	}
	if _, err := os.Stat(req.TargetPath); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("target after unpublish: stat = %v, want not exist", err)
	}
	if n := mountCount(t, req.TargetPath); n != 0 {
		t.Errorf("mounts at target = %d, want 0", n)
	}

	// A target that exists but was never mounted.
	never := h.request(newPod("payments", "api"), "")
	must(t, os.MkdirAll(never.TargetPath, 0o750))
	if err := h.unpublish(never); err != nil {
		t.Errorf("unpublish of an unmounted target = %v, want nil", err)
	}
}

func TestPublishDefaultPrefix(t *testing.T) {
	h := newHarness(t)
	h.writeKV("payments/api/db", map[string]any{"password": "from-prefix"})
	req := h.request(newPod("payments", "api"), "")

	must(t, h.publish(req))

	if got := readFile(t, filepath.Join(req.TargetPath, "db", "password")); got != "from-prefix" {
		t.Errorf("db/password = %q, want from-prefix", got)
	}
}

func TestPublishTokenInSecrets(t *testing.T) {
	h := newHarness(t)
	p := newPod("payments", "api")
	req := h.request(p, paymentsSecrets)
	delete(req.VolumeContext, spec.KubeletTokens)
	req.Secrets = map[string]string{spec.KubeletTokens: tokensJSON(testAudience, h.token(p, testAudience))}

	must(t, h.publish(req))

	if got := readFile(t, filepath.Join(req.TargetPath, "db-password")); got != "s3cret-one" {
		t.Errorf("db-password = %q, want s3cret-one", got)
	}
}

func TestPublishRejects(t *testing.T) {
	h := newHarness(t)
	fileTarget := filepath.Join(h.root, "a-file")
	must(t, os.WriteFile(fileTarget, nil, 0o600))

	tests := []struct {
		name    string
		secrets string
		mutate  func(*csi.NodePublishVolumeRequest, pod)
		code    codes.Code
		message []string
	}{
		{"missing volume id", paymentsSecrets, func(r *csi.NodePublishVolumeRequest, _ pod) { r.VolumeId = "" },
			codes.InvalidArgument, []string{"volume_id is missing"}},
		{"missing capability", paymentsSecrets, func(r *csi.NodePublishVolumeRequest, _ pod) { r.VolumeCapability = nil },
			codes.InvalidArgument, []string{"volume_capability is missing"}},
		{"block capability", paymentsSecrets, func(r *csi.NodePublishVolumeRequest, _ pod) {
			r.VolumeCapability.AccessType = &csi.VolumeCapability_Block{Block: &csi.VolumeCapability_BlockVolume{}}
		}, codes.InvalidArgument, []string{"block volume"}},
		{"not ephemeral", paymentsSecrets, func(r *csi.NodePublishVolumeRequest, _ pod) { delete(r.VolumeContext, spec.KubeletEphemeral) },
			codes.InvalidArgument, []string{"not an inline ephemeral volume"}},
		{"missing pod uid", paymentsSecrets, func(r *csi.NodePublishVolumeRequest, _ pod) { delete(r.VolumeContext, spec.KubeletPodUID) },
			codes.InvalidArgument, []string{spec.KubeletPodUID, "podInfoOnMount"}},
		{"missing service account", paymentsSecrets, func(r *csi.NodePublishVolumeRequest, _ pod) {
			delete(r.VolumeContext, spec.KubeletServiceAccount)
		}, codes.InvalidArgument, []string{spec.KubeletServiceAccount}},
		{"bad mount group", paymentsSecrets, func(r *csi.NodePublishVolumeRequest, _ pod) {
			r.VolumeCapability.GetMount().VolumeMountGroup = "wheel"
		}, codes.InvalidArgument, []string{`volume_mount_group "wheel"`}},
		{"no token", paymentsSecrets, func(r *csi.NodePublishVolumeRequest, _ pod) { delete(r.VolumeContext, spec.KubeletTokens) },
			codes.FailedPrecondition, []string{"tokenRequests", `"openbao"`}},
		{"token for other audience only", paymentsSecrets, func(r *csi.NodePublishVolumeRequest, p pod) {
			r.VolumeContext[spec.KubeletTokens] = tokensJSON("vault", h.token(p, "vault"))
		}, codes.FailedPrecondition, []string{`"vault"`, "tokenRequests"}},
		{"token with wrong audience", paymentsSecrets, func(r *csi.NodePublishVolumeRequest, p pod) {
			r.VolumeContext[spec.KubeletTokens] = tokensJSON(testAudience, h.token(p, "vault"))
		}, codes.PermissionDenied, []string{"claim aud"}},
		{"token of another pod", paymentsSecrets, func(r *csi.NodePublishVolumeRequest, _ pod) {
			r.VolumeContext[spec.KubeletTokens] = tokensJSON(testAudience, h.token(newPod("payments", "api"), testAudience))
		}, codes.PermissionDenied, []string{"kubernetes.io/pod/uid"}},
		{"token of another namespace", paymentsSecrets, func(r *csi.NodePublishVolumeRequest, _ pod) {
			r.VolumeContext[spec.KubeletTokens] = tokensJSON(testAudience, h.token(newPod("billing", "api"), testAudience))
		}, codes.PermissionDenied, []string{"kubernetes.io/namespace"}},
		{"malformed token", paymentsSecrets, func(r *csi.NodePublishVolumeRequest, _ pod) {
			r.VolumeContext[spec.KubeletTokens] = tokensJSON(testAudience, "not-a-jwt")
		}, codes.InvalidArgument, []string{"not a signed JWT"}},
		{"malformed tokens attribute", paymentsSecrets, func(r *csi.NodePublishVolumeRequest, _ pod) {
			r.VolumeContext[spec.KubeletTokens] = "{"
		}, codes.InvalidArgument, []string{"not a JSON object"}},
		{"malformed secrets", "- path: [", nil, codes.InvalidArgument, []string{`"secrets" is not a valid YAML list`}},
		{"unknown item key", "- path: payments/db\n  feld: password", nil, codes.InvalidArgument, []string{`unknown field "feld"`}},
		{"unknown attribute", paymentsSecrets, func(r *csi.NodePublishVolumeRequest, _ pod) { r.VolumeContext["sekrets"] = "x" },
			codes.InvalidArgument, []string{`unknown volume attribute "sekrets"`}},
		{"duplicate file", "- path: payments/db\n  field: password\n  file: x\n- path: payments/db\n  field: username\n  file: x",
			nil, codes.InvalidArgument, []string{`"x" is used twice`}},
		{"escaping file", "- path: payments/db\n  field: password\n  file: ../../etc/x", nil, codes.InvalidArgument, []string{`contains ".."`}},
		{"absolute file", "- path: payments/db\n  field: password\n  file: /etc/x", nil, codes.InvalidArgument, []string{"is absolute"}},
		{"missing field", "- path: payments/db\n  field: token", nil, codes.InvalidArgument, []string{`no field "token"`, `"password"`}},
		{"size limit above node limit", paymentsSecrets, func(r *csi.NodePublishVolumeRequest, _ pod) {
			r.VolumeContext[spec.AttrSizeLimit] = "1Gi"
		}, codes.InvalidArgument, []string{"sizeLimit", "node's limit"}},
		{"other tenant path", "- path: billing/db\n  field: password", nil, codes.PermissionDenied,
			[]string{"secret/data/billing/db", `role "payments-api"`, "permission denied"}},
		{"missing path", "- path: payments/nosuch\n  field: x", nil, codes.NotFound, []string{"secret/data/payments/nosuch"}},
		{"unknown role", paymentsSecrets, func(r *csi.NodePublishVolumeRequest, _ pod) { r.VolumeContext[spec.AttrRole] = "nosuch" },
			codes.PermissionDenied, []string{`role "nosuch"`}},
		{"target is a file", paymentsSecrets, func(r *csi.NodePublishVolumeRequest, _ pod) { r.TargetPath = fileTarget },
			codes.FailedPrecondition, []string{fileTarget}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPod("payments", "api")
			req := h.request(p, tt.secrets)
			if tt.mutate != nil {
				tt.mutate(req, p)
			}

			err := h.publish(req)

			if got := status.Code(err); got != tt.code {
				t.Fatalf("code = %v, want %v (error: %v)", got, tt.code, err)
			}
			for _, want := range tt.message {
				if !strings.Contains(status.Convert(err).Message(), want) {
					t.Errorf("message %q does not contain %q", status.Convert(err).Message(), want)
				}
			}
			if req.TargetPath != fileTarget && req.TargetPath != "" {
				if n := mountCount(t, req.TargetPath); n != 0 {
					t.Errorf("failed publish left %d mounts at the target", n)
				}
			}
		})
	}
}

func TestPublishForeignMount(t *testing.T) {
	h := newHarness(t)
	req := h.request(newPod("payments", "api"), paymentsSecrets)
	must(t, os.MkdirAll(req.TargetPath, 0o750))
	must(t, syscall.Mount("other", req.TargetPath, "tmpfs", 0, "size=1m"))
	t.Cleanup(func() { _ = syscall.Unmount(req.TargetPath, 0) })

	err := h.publish(req)

	if status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("publish over a foreign mount = %v, want FailedPrecondition", err)
	}
	if n := mountCount(t, req.TargetPath); n != 1 {
		t.Errorf("mounts at target = %d, want the foreign one only", n)
	}
}

func TestPublishLargeValue(t *testing.T) {
	h := newHarness(t)
	big := strings.Repeat("x", 5<<20)
	h.writeKV("payments/big", map[string]any{"blob": big})
	secrets := "- path: payments/big\n  field: blob"

	owner := newPod("payments", "api")
	ok := h.request(owner, secrets)
	must(t, h.publish(ok))
	if info, err := os.Stat(filepath.Join(ok.TargetPath, "blob")); err != nil || info.Size() != 5<<20 {
		t.Errorf("blob = %v, %v; want 5 MiB", info, err)
	}

	// Content over half the limit still rotates: the old and the new copy
	// fit side by side.
	h.writeKV("payments/big", map[string]any{"blob": strings.Repeat("y", 5<<20)})
	h.clock.Advance(DefaultRefreshInterval)
	must(t, h.publish(h.republishRequest(ok, owner)))
	if got := readFile(t, filepath.Join(ok.TargetPath, "blob")); got[0] != 'y' {
		t.Errorf("blob after rotation starts with %q, want the new content", got[0])
	}

	tooBig := h.request(newPod("payments", "api"), secrets)
	tooBig.VolumeContext[spec.AttrSizeLimit] = "4Mi"
	err := h.publish(tooBig)
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("publish of 5 MiB into 4Mi = %v, want InvalidArgument", err)
	}
	for _, want := range []string{"5242880", "4194304"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("message %q does not name %s bytes", err, want)
		}
	}
	if n := mountCount(t, tooBig.TargetPath); n != 0 {
		t.Errorf("rejected publish left %d mounts", n)
	}
}

func TestPublishOpenBaoDown(t *testing.T) {
	h := newHarness(t)
	req := h.request(newPod("payments", "api"), paymentsSecrets)

	h.bao.SetDown(true)
	err := h.publish(req)
	h.bao.SetDown(false)

	if status.Code(err) != codes.Unavailable {
		t.Fatalf("publish with OpenBao down = %v, want Unavailable", err)
	}
	if _, statErr := os.Stat(req.TargetPath); !errors.Is(statErr, os.ErrNotExist) {
		t.Errorf("failed publish left the target behind: stat = %v", statErr)
	}

	// The same request succeeds once OpenBao is back.
	must(t, h.publish(req))
}

func TestPublishOpenBaoFailsMidway(t *testing.T) {
	h := newHarness(t)
	p := newPod("payments", "api")
	req := h.request(p, paymentsSecrets)
	must(t, h.publish(req))
	before, err := os.Readlink(filepath.Join(req.TargetPath, "..data"))
	must(t, err)

	// Login is cached, so the refresh only reads; fail those reads. The
	// volume keeps its files and the republish succeeds.
	h.clock.Advance(DefaultRefreshInterval)
	h.bao.FailNext(10, 503)
	err = h.publish(h.republishRequest(req, p))
	h.bao.FailNext(0, 0)

	if err != nil {
		t.Fatalf("republish with failing reads = %v, want success with the old files", err)
	}
	after, err := os.Readlink(filepath.Join(req.TargetPath, "..data"))
	must(t, err)
	if before != after {
		t.Errorf("failed republish swapped content: %s -> %s", before, after)
	}
	entries, err := os.ReadDir(req.TargetPath)
	must(t, err)
	dataDirs := 0
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") && e.Name() != "..data" {
			dataDirs++
		}
	}
	if dataDirs != 1 {
		t.Errorf("target holds %d content directories, want 1: %v", dataDirs, entries)
	}
	if got := readFile(t, filepath.Join(req.TargetPath, "db-password")); got != "s3cret-one" {
		t.Errorf("db-password = %q after failed republish, want the old content", got)
	}
}

func TestPublishSealed(t *testing.T) {
	h := newHarness(t)
	h.bao.Seal()
	defer h.bao.Unseal()

	err := h.publish(h.request(newPod("payments", "api"), paymentsSecrets))

	if status.Code(err) != codes.Unavailable {
		t.Fatalf("publish with OpenBao sealed = %v, want Unavailable", err)
	}
	if !strings.Contains(err.Error(), "sealed") {
		t.Errorf("message %q does not say OpenBao is sealed", err)
	}
}

func TestLoginReusedPerServiceAccount(t *testing.T) {
	h := newHarness(t)
	h.bao.ResetCounts()

	for range 5 {
		must(t, h.publish(h.request(newPod("payments", "api"), "- path: payments/db\n  field: password")))
	}

	if n := h.bao.Count(baotest.OpLogin); n != 1 {
		t.Errorf("logins = %d, want 1 for five pods of one service account", n)
	}
	if n := h.bao.Count(baotest.OpKVRead); n != 1 {
		t.Errorf("KV reads = %d, want 1: the other pods get the cached copy", n)
	}
}

func TestConcurrentPublishesShareReads(t *testing.T) {
	h := newHarness(t)
	h.bao.ResetCounts()
	h.bao.SetLatency(200 * time.Millisecond) // keeps the reads in flight together
	defer h.bao.SetLatency(0)

	const pods = 8
	errs := make(chan error, pods)
	for range pods {
		req := h.request(newPod("payments", "api"), "- path: payments/db\n  field: password")
		go func() { errs <- h.publish(req) }()
	}
	for range pods {
		must(t, <-errs)
	}

	if n := h.bao.Count(baotest.OpLogin); n != 1 {
		t.Errorf("logins = %d, want 1", n)
	}
	if n := h.bao.Count(baotest.OpKVRead); n >= pods {
		t.Errorf("KV reads = %d for %d concurrent identical reads, want fewer", n, pods)
	}
}

func TestDynamicSecretLeaseRevokedOnUnpublish(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	must(t, baotest.EnableDatabase(ctx, h.admin, "database", baotest.DatabaseConnection{}))
	must(t, baotest.WriteDatabaseRole(ctx, h.admin, "database", "payments", baotest.DatabaseRole{DefaultTTL: 2 * time.Minute, MaxTTL: 6 * time.Minute}))
	req := h.request(newPod("payments", "api"), "- path: database/creds/payments\n  type: dynamic\n  format: json\n  file: db.json")

	must(t, h.publish(req))
	if got := readFile(t, filepath.Join(req.TargetPath, "db.json")); !strings.Contains(got, `"username"`) {
		t.Errorf("db.json = %q, want database credentials", got)
	}
	if n := h.bao.LeaseCount(); n != 1 {
		t.Fatalf("active leases = %d, want 1", n)
	}

	must(t, h.unpublish(req))
	if n := h.bao.LeaseCount(); n != 0 {
		t.Errorf("active leases after unpublish = %d, want 0", n)
	}
}

func TestIdentityService(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()

	info, err := h.ident.GetPluginInfo(ctx, &csi.GetPluginInfoRequest{})
	must(t, err)
	if info.GetName() != DefaultName || info.GetVendorVersion() != "test" {
		t.Errorf("GetPluginInfo() = %q %q, want %q test", info.GetName(), info.GetVendorVersion(), DefaultName)
	}
	probe, err := h.ident.Probe(ctx, &csi.ProbeRequest{})
	must(t, err)
	if !probe.GetReady().GetValue() {
		t.Error("Probe() = not ready while serving")
	}
	caps, err := h.client.NodeGetCapabilities(ctx, &csi.NodeGetCapabilitiesRequest{})
	must(t, err)
	if len(caps.GetCapabilities()) != 1 || caps.GetCapabilities()[0].GetRpc().GetType() != csi.NodeServiceCapability_RPC_VOLUME_MOUNT_GROUP {
		t.Errorf("NodeGetCapabilities() = %v, want VOLUME_MOUNT_GROUP", caps.GetCapabilities())
	}
	nodeInfo, err := h.client.NodeGetInfo(ctx, &csi.NodeGetInfoRequest{})
	must(t, err)
	if nodeInfo.GetNodeId() != testNode {
		t.Errorf("NodeGetInfo().NodeId = %q, want %q", nodeInfo.GetNodeId(), testNode)
	}
	_, err = h.client.NodeStageVolume(ctx, &csi.NodeStageVolumeRequest{})
	if status.Code(err) != codes.Unimplemented {
		t.Errorf("NodeStageVolume() = %v, want Unimplemented", err)
	}
}

func mountInfo(t *testing.T, target string) string {
	t.Helper()
	data, err := os.ReadFile("/proc/self/mountinfo")
	must(t, err)
	for _, line := range strings.Split(string(data), "\n") {
		if fields := strings.Fields(line); len(fields) > 4 && fields[4] == target {
			return line
		}
	}
	t.Fatalf("no mount at %s", target)
	return ""
}
