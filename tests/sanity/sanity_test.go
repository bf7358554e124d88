// Package sanity runs csi-sanity against phantom-node's real gRPC server,
// with real tmpfs mounts and the OpenBao test server.
//
// csi-sanity creates its volumes through a Controller service, which
// Phantom does not have: inline ephemeral volumes are created by kubelet.
// volumeSource below stands in for kubelet on a second socket. Its
// CreateVolume returns the volume context kubelet would send for a fresh
// pod (pod info and a signed service-account token), so the publish specs
// exercise the real publish path. The Controller Server specs are skipped,
// because they would test that stand-in, not Phantom.
package sanity

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/container-storage-interface/spec/lib/go/csi"
	"github.com/google/uuid"
	"github.com/kubernetes-csi/csi-test/v5/pkg/sanity"
	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/ginkgo/v2/types"
	"github.com/onsi/gomega"
	"github.com/openbao/openbao/api/v2"
	"google.golang.org/grpc"

	"github.com/phantom-sec/phantom/driver"
	"github.com/phantom-sec/phantom/pkg/bao"
	"github.com/phantom-sec/phantom/pkg/baotest"
	"github.com/phantom-sec/phantom/pkg/fetch"
	"github.com/phantom-sec/phantom/pkg/spec"
	"github.com/phantom-sec/phantom/pkg/tmpfs"
)

const (
	audience = "openbao"
	issuer   = "https://kubernetes.default.svc.cluster.local"
)

func TestSanity(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("csi-sanity publishes real tmpfs mounts and needs root")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	dir := t.TempDir()

	server := baotest.New(t)
	signer := provision(t, ctx, server)

	nodeSocket := filepath.Join(dir, "node.sock")
	d := serveNode(t, ctx, server.URL(), nodeSocket)
	sourceSocket := filepath.Join(dir, "source.sock")
	serveVolumeSource(t, ctx, sourceSocket, signer, d)

	cfg := sanity.NewTestConfig()
	cfg.Address = nodeSocket
	cfg.ControllerAddress = sourceSocket
	cfg.TargetPath = filepath.Join(dir, "target")
	cfg.StagingPath = filepath.Join(dir, "staging")
	cfg.IdempotentCount = 3
	cfg.TestVolumeSize = 0

	suiteConfig, reporterConfig := ginkgo.GinkgoConfiguration()
	suiteConfig.SkipStrings = append(suiteConfig.SkipStrings, "Controller Server")
	reporterConfig.NoColor = true
	sanity.GinkgoTest(&cfg)
	gomega.RegisterFailHandler(ginkgo.Fail)
	ginkgo.ReportAfterSuite("counts", func(report ginkgo.Report) {
		var ran, passed, failed, skipped int
		for _, spec := range report.SpecReports {
			if spec.LeafNodeType != types.NodeTypeIt {
				continue
			}
			switch {
			case spec.State == types.SpecStatePassed:
				ran++
				passed++
			case spec.State.Is(types.SpecStateFailureStates):
				ran++
				failed++
			default:
				skipped++
			}
		}
		fmt.Printf("\nsanity: csi-sanity ran %d specs: %d passed, %d failed, %d skipped (Controller Server specs skipped: Phantom has no controller)\n",
			ran, passed, failed, skipped)
	})
	ginkgo.RunSpecs(t, "phantom-node csi-sanity", suiteConfig, reporterConfig)
}

// provision sets up JWT auth, a role for the pods volumeSource invents and
// a secret they may read.
func provision(t *testing.T, ctx context.Context, server *baotest.Server) *baotest.Issuer {
	t.Helper()
	cfg := api.DefaultConfig()
	cfg.Address = server.URL()
	admin, err := api.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	admin.SetToken(server.RootToken())
	signer, err := baotest.NewIssuer(issuer)
	if err != nil {
		t.Fatal(err)
	}
	steps := []error{
		baotest.EnableKV2(ctx, admin, "secret"),
		baotest.EnableJWTAuth(ctx, admin, "jwt", issuer, signer.PublicKeyPEM()),
		baotest.WritePolicy(ctx, admin, "sanity-app", `path "secret/data/sanity/*" { capabilities = ["read"] }`),
		baotest.WriteJWTRole(ctx, admin, "jwt", "sanity-app", baotest.JWTRole{
			BoundAudiences: []string{audience},
			BoundClaims:    map[string]any{"/kubernetes.io/namespace": "sanity"},
			UserClaim:      "sub",
			TokenPolicies:  []string{"sanity-app"},
			TokenTTL:       15 * time.Minute,
		}),
	}
	for _, err := range steps {
		if err != nil {
			t.Fatalf("provision OpenBao: %v", err)
		}
	}
	if _, err := admin.KVv2("secret").Put(ctx, "sanity/db", map[string]any{"password": "sanity-" + uuid.NewString()}); err != nil {
		t.Fatal(err)
	}
	return signer
}

func serveNode(t *testing.T, ctx context.Context, baoURL, socket string) *driver.Driver {
	t.Helper()
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	client, err := bao.New(bao.Config{Address: baoURL, AuthMethod: bao.AuthJWT})
	if err != nil {
		t.Fatal(err)
	}
	d, err := driver.New(driver.Config{
		Version: "sanity", NodeID: "sanity-node",
		Bao: client, Sessions: bao.NewSessions(client, nil), Fetcher: fetch.New(fetch.Config{}),
		Mounter: tmpfs.NewMounter(logger), Audience: audience, MaxVolumeBytes: 1 << 20, Logger: logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	listener, err := driver.Listen(socket)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		if err := d.Serve(ctx, listener); err != nil {
			t.Errorf("Serve() = %v", err)
		}
	}()
	return d
}

// volumeSource stands in for kubelet: CreateVolume returns the volume
// context of a new pod, as kubelet builds it for an inline volume. Its
// socket also serves the driver's own Identity service, which csi-sanity
// checks on every socket it is given.
type volumeSource struct {
	csi.UnimplementedControllerServer
	signer *baotest.Issuer
}

func serveVolumeSource(t *testing.T, ctx context.Context, socket string, signer *baotest.Issuer, identity csi.IdentityServer) {
	t.Helper()
	listener, err := net.Listen("unix", socket)
	if err != nil {
		t.Fatal(err)
	}
	server := grpc.NewServer()
	source := &volumeSource{signer: signer}
	csi.RegisterControllerServer(server, source)
	csi.RegisterIdentityServer(server, identity)
	go func() { _ = server.Serve(listener) }()
	go func() { <-ctx.Done(); server.Stop() }()
}

// ControllerGetCapabilities lists none, so csi-sanity never tests the
// stand-in itself.
func (s *volumeSource) ControllerGetCapabilities(context.Context, *csi.ControllerGetCapabilitiesRequest) (*csi.ControllerGetCapabilitiesResponse, error) {
	return &csi.ControllerGetCapabilitiesResponse{}, nil
}

func (s *volumeSource) CreateVolume(_ context.Context, req *csi.CreateVolumeRequest) (*csi.CreateVolumeResponse, error) {
	podUID := uuid.NewString()
	token, err := s.signer.Sign(baotest.PodIdentity{
		Namespace: "sanity", ServiceAccount: "app", ServiceAccountUID: "sa-app",
		PodName: req.GetName(), PodUID: podUID, NodeName: "sanity-node",
	}, []string{audience}, 10*time.Minute)
	if err != nil {
		return nil, err
	}
	tokens, _ := json.Marshal(map[string]any{audience: map[string]string{"token": token}})
	return &csi.CreateVolumeResponse{Volume: &csi.Volume{
		VolumeId: "csi-" + podUID,
		VolumeContext: map[string]string{
			spec.KubeletPodName:        req.GetName(),
			spec.KubeletPodNamespace:   "sanity",
			spec.KubeletPodUID:         podUID,
			spec.KubeletServiceAccount: "app",
			spec.KubeletEphemeral:      "true",
			spec.KubeletTokens:         string(tokens),
			spec.AttrRole:              "sanity-app",
			spec.AttrSecrets:           "- path: sanity/db\n  field: password",
		},
	}}, nil
}

func (s *volumeSource) DeleteVolume(context.Context, *csi.DeleteVolumeRequest) (*csi.DeleteVolumeResponse, error) {
	return &csi.DeleteVolumeResponse{}, nil
}
