// Command phantom-webhook is Phantom's mutating admission webhook. It adds
// the Phantom CSI volume to pods that opt in, serves HTTPS with an
// in-memory certificate whose CA it publishes on its own pod, and, on the
// replica that holds the leader Lease, keeps the
// MutatingWebhookConfiguration and the CSIDriver object as they should be.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
)

func main() {
	os.Exit(mainWithExitCode())
}

func mainWithExitCode() int {
	cfg, err := parseFlags(os.Args[1:], os.Getenv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2
	}
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(os.Stderr, "phantom-webhook: invalid configuration:\n%v\n", err)
		return 2
	}

	logger := newLogger(cfg, os.Stderr)
	// client-go logs through klog; send those lines to the same handler.
	klog.SetSlogLogger(logger)

	client, err := newClient(cfg.Kubeconfig)
	if err != nil {
		logger.Error("create Kubernetes client", "error", err)
		return 1
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, cfg, deps{Client: client, Logger: logger, Clock: clock.RealClock{}}); err != nil {
		logger.Error("phantom-webhook stopped", "error", err)
		return 1
	}
	return 0
}

func newClient(kubeconfig string) (kubernetes.Interface, error) {
	var restConfig *rest.Config
	var err error
	if kubeconfig == "" {
		restConfig, err = rest.InClusterConfig()
	} else {
		restConfig, err = clientcmd.BuildConfigFromFlags("", kubeconfig)
	}
	if err != nil {
		return nil, fmt.Errorf("load Kubernetes client configuration: %w", err)
	}
	restConfig.UserAgent = "phantom-webhook"
	client, err := kubernetes.NewForConfig(restConfig)
	if err != nil {
		return nil, fmt.Errorf("create Kubernetes client: %w", err)
	}
	return client, nil
}
