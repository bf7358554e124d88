// Package e2e holds Phantom's end-to-end suite. It runs against the
// single-node cluster of cluster/up.sh, with Phantom installed from its
// Helm chart and images built from this repository. OpenBao (the baoserver
// of cmd/baoserver, or a real one) holds canary values made for each run.
// The suite ends with a scan of etcd, the node's disks and every captured
// log for those values.
//
// The suite skips unless PHANTOM_E2E=1; hack/e2e.sh sets it after it has
// started the cluster and installed Phantom. See README.md.
package e2e
