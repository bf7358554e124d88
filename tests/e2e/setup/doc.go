// Package setup installs Phantom on the end-to-end cluster as a user would
// and prepares OpenBao for it.
//
// RenderChart renders charts/phantom through Helm's Go packages with the
// values of this cluster and patches the few fields that a cluster whose
// only network is the host's loopback needs (see patchForCluster). Install
// applies the result with server-side apply and waits for the node plugin
// and the webhook. ConfigureOpenBao registers the cluster's service-account
// issuer with OpenBao's JWT auth method, and WriteTenant adds a role per
// tenant namespace.
//
// cmd/phantom-e2e runs these steps from hack/e2e.sh; the end-to-end suite
// calls them for upgrades and tenants.
package setup
