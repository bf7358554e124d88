package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/phantom-sec/phantom/driver"
	"github.com/phantom-sec/phantom/pkg/monitor"
	"github.com/phantom-sec/phantom/pkg/protect"
	"github.com/phantom-sec/phantom/pkg/tmpfs"
)

// protection is the runtime-protection monitor and what connects it to
// published volumes. A zero protection means runtime protection is off.
type protection struct {
	monitor   *monitor.Monitor
	protector driver.Protector
}

// startProtection loads the eBPF monitor unless --runtime-protection is
// off. A monitor that cannot load is logged and leaves publishing alone:
// secrets delivery never depends on it.
func startProtection(cfg *config, log *slog.Logger, reg prometheus.Registerer, mounter *tmpfs.Mounter) protection {
	if cfg.runtimeProtection == "off" {
		log.Info("runtime protection is off (--runtime-protection=off)")
		return protection{}
	}
	mode, _ := protect.ParseMode(cfg.runtimeProtection) // validated by parseFlags

	client, err := kubeClient(cfg.kubeconfig)
	if err != nil {
		log.Warn("no Kubernetes API access: runtime protection uses the default mode for every namespace and records no pod events",
			"error", err.Error())
	}
	monitorConfig := monitor.Config{NodeName: cfg.nodeID, Logger: log, Registerer: reg}
	var modes protect.ModeSource
	if client != nil {
		monitorConfig.Events = protect.KubeEvents{Client: client, Node: cfg.nodeID, Logger: log}
		modes = protect.KubeModes{Client: client}
	}

	m, err := monitor.New(monitorConfig)
	// Loading parses the kernel's BTF into memory that is garbage once the
	// programs are in the kernel, so return it to the system now.
	debug.FreeOSMemory()
	if err != nil {
		log.Error("runtime protection monitor failed to load; secrets are delivered without it", "error", err.Error())
		if m == nil {
			return protection{}
		}
	}
	status := m.Status()
	log.Info("runtime protection active", "path", status.Path, "default_mode", mode, "reason", status.Reason, "limits", status.Limits)

	p, err := protect.New(protect.Config{
		Monitor: m, Modes: modes, Default: mode, Device: mounter.Device, Logger: log,
	})
	if err != nil {
		log.Error("runtime protection disabled", "error", err.Error())
		return protection{monitor: m}
	}
	return protection{monitor: m, protector: p}
}

// run reads the monitor's events until ctx is done. Its failure is logged,
// never returned, so it cannot stop the daemon.
func (p protection) run(ctx context.Context, log *slog.Logger) error {
	if p.monitor == nil {
		return nil
	}
	defer p.monitor.Close()
	if err := p.monitor.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
		log.Error("runtime protection monitor stopped reading events", "error", err.Error())
	}
	return nil
}

// status returns the monitor's status for /status, or nil when off.
func (p protection) status() *monitor.Status {
	if p.monitor == nil {
		return nil
	}
	s := p.monitor.Status()
	return &s
}

// kubeClient returns a client for core/v1, the only API group phantom-node
// uses, configured from kubeconfig or, when that is empty, from the pod's
// in-cluster configuration.
func kubeClient(kubeconfig string) (rest.Interface, error) {
	var restConfig *rest.Config
	var err error
	switch {
	case kubeconfig != "":
		restConfig, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	case os.Getenv("KUBERNETES_SERVICE_HOST") != "":
		restConfig, err = rest.InClusterConfig()
	default:
		return nil, errors.New("not running in a pod and --kubeconfig is empty")
	}
	if err != nil {
		return nil, fmt.Errorf("load Kubernetes client configuration: %w", err)
	}
	restConfig.UserAgent = "phantom-node"
	return protect.NewCoreClient(restConfig)
}
