// Package registration registers Phantom's CSI driver with kubelet through
// the plugin registration API, the job node-driver-registrar does for other
// drivers. Kubelet watches its plugins_registry directory, calls GetInfo on
// each socket that appears there and then connects to the CSI endpoint.
package registration

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync/atomic"

	"google.golang.org/grpc"
	registerapi "k8s.io/kubelet/pkg/apis/pluginregistration/v1"

	"github.com/phantom-sec/phantom/pkg/unixsock"
)

// Config configures a Server.
type Config struct {
	// DriverName is the CSI driver name, such as secrets.phantom.dev.
	DriverName string
	// Endpoint is the path of the CSI socket in kubelet's mount namespace.
	Endpoint string
	// Dir is kubelet's plugin registration directory.
	Dir    string
	Logger *slog.Logger
}

// Server serves kubelet's registration calls.
type Server struct {
	registerapi.UnimplementedRegistrationServer

	cfg        Config
	registered atomic.Bool
}

var _ registerapi.RegistrationServer = (*Server)(nil)

// New returns a Server.
func New(cfg Config) *Server {
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg}
}

// SocketPath returns the registration socket kubelet discovers.
func (s *Server) SocketPath() string {
	return filepath.Join(s.cfg.Dir, s.cfg.DriverName+"-reg.sock")
}

// Run serves the registration socket until ctx is done. The listener
// removes the socket when it closes, so kubelet deregisters the driver when
// the daemon stops.
func (s *Server) Run(ctx context.Context) error {
	path := s.SocketPath()
	listener, err := unixsock.Listen(path)
	if err != nil {
		return fmt.Errorf("registration socket: %w", err)
	}

	server := grpc.NewServer()
	registerapi.RegisterRegistrationServer(server, s)
	go func() {
		<-ctx.Done()
		server.GracefulStop()
	}()

	s.cfg.Logger.Info("waiting for kubelet to register the driver", "socket", path)
	if err := server.Serve(listener); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return fmt.Errorf("serve registration socket %s: %w", path, err)
	}
	return nil
}

// Registered reports whether kubelet confirmed the registration.
func (s *Server) Registered() bool { return s.registered.Load() }

// GetInfo describes the driver to kubelet.
func (s *Server) GetInfo(context.Context, *registerapi.InfoRequest) (*registerapi.PluginInfo, error) {
	return &registerapi.PluginInfo{
		Type:              registerapi.CSIPlugin,
		Name:              s.cfg.DriverName,
		Endpoint:          s.cfg.Endpoint,
		SupportedVersions: []string{"1.0.0"},
	}, nil
}

// NotifyRegistrationStatus records kubelet's verdict. A failed registration
// is logged: kubelet retries when the socket is recreated, so the daemon
// keeps running.
func (s *Server) NotifyRegistrationStatus(_ context.Context, status *registerapi.RegistrationStatus) (*registerapi.RegistrationStatusResponse, error) {
	s.registered.Store(status.GetPluginRegistered())
	if status.GetPluginRegistered() {
		s.cfg.Logger.Info("kubelet registered the driver", "driver", s.cfg.DriverName)
	} else {
		s.cfg.Logger.Error("kubelet rejected the driver registration", "driver", s.cfg.DriverName, "error", status.GetError())
	}
	return &registerapi.RegistrationStatusResponse{}, nil
}
