package registration

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"
)

// TestKubeletHandshake plays kubelet's side of the registration: GetInfo on
// the discovered socket, then NotifyRegistrationStatus.
func TestKubeletHandshake(t *testing.T) {
	dir := t.TempDir()
	s := New(Config{DriverName: "secrets.phantom.dev", Endpoint: "/var/lib/kubelet/plugins/secrets.phantom.dev/csi.sock", Dir: dir})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run() = %v", err)
		}
	})

	socket := filepath.Join(dir, "secrets.phantom.dev-reg.sock")
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("dial %s: %v", socket, err)
	}
	defer conn.Close()
	client := registerapi.NewRegistrationClient(conn)

	callCtx, callCancel := context.WithTimeout(ctx, 10*time.Second)
	defer callCancel()
	info, err := client.GetInfo(callCtx, &registerapi.InfoRequest{}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatalf("GetInfo() = %v", err)
	}
	if info.GetType() != registerapi.CSIPlugin || info.GetName() != "secrets.phantom.dev" {
		t.Errorf("GetInfo() = type %q name %q, want CSIPlugin secrets.phantom.dev", info.GetType(), info.GetName())
	}
	if info.GetEndpoint() != "/var/lib/kubelet/plugins/secrets.phantom.dev/csi.sock" {
		t.Errorf("GetInfo().Endpoint = %q", info.GetEndpoint())
	}
	if len(info.GetSupportedVersions()) == 0 {
		t.Error("GetInfo() lists no supported versions")
	}

	if s.Registered() {
		t.Fatal("Registered() = true before kubelet confirmed")
	}
	if _, err := client.NotifyRegistrationStatus(callCtx, &registerapi.RegistrationStatus{PluginRegistered: true}); err != nil {
		t.Fatalf("NotifyRegistrationStatus() = %v", err)
	}
	if !s.Registered() {
		t.Error("Registered() = false after kubelet confirmed")
	}
}
