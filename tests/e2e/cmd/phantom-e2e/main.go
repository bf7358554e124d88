// Command phantom-e2e installs Phantom on the end-to-end cluster that
// tests/e2e/cluster/up.sh started, the way hack/e2e.sh needs it:
//
//	phantom-e2e install   configure OpenBao for the cluster, then install the chart
//	phantom-e2e render    print the manifests that install applies
//	phantom-e2e sample    run the sample app of the quick start in namespace demo
//
// OpenBao is the baoserver whose files are in $PHANTOM_E2E_STATE/openbao,
// or the server named by PHANTOM_OPENBAO_ADDR and PHANTOM_OPENBAO_TOKEN.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/phantom-sec/phantom/tests/e2e/cluster"
	"github.com/phantom-sec/phantom/tests/e2e/setup"
)

const usage = `usage: phantom-e2e install|render|sample [flags]

  install  configure OpenBao's JWT auth for the cluster and install the chart
  render   print the patched chart manifests that install applies
  sample   run the sample app in namespace demo`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "phantom-e2e:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	command := args[0]
	fs := flag.NewFlagSet("phantom-e2e "+command, flag.ContinueOnError)
	stateDir := fs.String("state", os.Getenv(cluster.EnvStateDir), "state directory of the cluster (default $PHANTOM_E2E_STATE or "+cluster.DefaultStateDir+")")
	tokenInSecrets := fs.Bool("token-in-secrets", true, "chart value csiDriver.serviceAccountTokenInSecrets")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q\n%s", fs.Args(), usage)
	}

	c, err := cluster.Load(*stateDir)
	if err != nil {
		return err
	}
	bao, err := setup.LoadOpenBao(setup.OpenBaoDir(c))
	if err != nil {
		return err
	}
	opts, err := setup.ChartOptionsFor(c, bao, *tokenInSecrets)
	if err != nil {
		return err
	}

	switch command {
	case "install":
		return install(ctx, c, bao, opts)
	case "render":
		m, err := setup.RenderChart(opts)
		if err != nil {
			return err
		}
		data, err := m.YAML()
		if err != nil {
			return err
		}
		for _, p := range m.Patches {
			fmt.Printf("# patched for the end-to-end cluster: %s\n", p)
		}
		_, err = os.Stdout.Write(data)
		return err
	case "sample":
		return runSample(ctx, c, bao)
	default:
		return fmt.Errorf("unknown command %q\n%s", command, usage)
	}
}

func install(ctx context.Context, c *cluster.Cluster, bao *setup.OpenBao, opts setup.ChartOptions) error {
	started := time.Now()
	trust, err := setup.FetchClusterTrust(ctx, c.ServiceAccountIssuer, c.CAFile)
	if err != nil {
		return err
	}
	if err := setup.ConfigureOpenBao(ctx, bao, trust); err != nil {
		return err
	}
	logf("OpenBao %s: jwt auth trusts issuer %s (%d keys)", bao.Address, trust.Issuer, len(trust.PublicKeysPEM))

	if _, err := setup.Install(ctx, c, opts, logf); err != nil {
		return err
	}
	logf("Phantom installed in %s", time.Since(started).Round(time.Second))
	return nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s %s\n", time.Now().UTC().Format("15:04:05"), fmt.Sprintf(format, args...))
}
