package setup

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"

	"github.com/phantom-sec/phantom/tests/e2e/cluster"
)

// ForwardComment tags the iptables rules of ForwardService. cluster/down.sh
// deletes every rule that carries it.
const ForwardComment = "phantom-e2e"

// ForwardService does for one Service what a service proxy would: an
// iptables rule in the nat table's OUTPUT chain sends connections from
// this host to the Service's ClusterIP and port on to 127.0.0.1:target,
// where a host-network pod listens. The API server calls a webhook through
// its Service this way. up.sh routes the whole service CIDR to the
// loopback device, so without the rule such connections are refused on
// this host. ForwardService is idempotent.
func ForwardService(ctx context.Context, c *cluster.Cluster, namespace, name string, target int) error {
	out, err := c.Kubectl(ctx, nil, "-n", namespace, "get", "service", name,
		"-o", `jsonpath={.spec.clusterIP}{" "}{range .spec.ports[*]}{.port}{" "}{end}`)
	if err != nil {
		return fmt.Errorf("look up Service %s/%s: %w", namespace, name, err)
	}
	fields := strings.Fields(string(out))
	if len(fields) < 2 || net.ParseIP(fields[0]) == nil {
		return fmt.Errorf("Service %s/%s has no ClusterIP and port (got %q)", namespace, name, out)
	}

	for _, port := range fields[1:] {
		if _, err := strconv.Atoi(port); err != nil {
			return fmt.Errorf("Service %s/%s port %q is not a number", namespace, name, port)
		}
		rule := []string{"OUTPUT", "-d", fields[0] + "/32", "-p", "tcp", "--dport", port,
			"-m", "comment", "--comment", ForwardComment,
			"-j", "DNAT", "--to-destination", "127.0.0.1:" + strconv.Itoa(target)}
		if iptables(ctx, append([]string{"-C"}, rule...)...) == nil {
			continue
		}
		if err := iptables(ctx, append([]string{"-A"}, rule...)...); err != nil {
			return fmt.Errorf("forward Service %s/%s %s:%s to 127.0.0.1:%d: %w", namespace, name, fields[0], port, target, err)
		}
	}
	return nil
}

func iptables(ctx context.Context, args ...string) error {
	cmd := exec.CommandContext(ctx, "iptables", append([]string{"-w", "-t", "nat"}, args...)...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("iptables %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return nil
}
