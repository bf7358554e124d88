// Package chart holds the tests of the Helm chart charts/phantom and of the
// plain manifests in deploy/ rendered from it: helm lint, golden renders, the
// values schema, strict decoding of every rendered object, the RBAC and
// privilege promises, and agreement with the objects that the webhook's
// reconciler maintains.
//
// Run them with `go test ./tests/chart/...`; `go test ./tests/chart -update`
// rewrites the golden files under testdata/golden.
package chart
