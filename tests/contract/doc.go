// Package contract holds the OpenBao contract suite: the behaviours of
// OpenBao that Phantom relies on, asserted through the official API client
// so failures look the same as they would to Phantom.
//
// By default the suite runs against the in-process test server
// (pkg/baotest). Set PHANTOM_TEST_OPENBAO_ADDR and PHANTOM_TEST_OPENBAO_TOKEN
// (a root or admin token) to run it against a real OpenBao;
// PHANTOM_TEST_OPENBAO_CACERT names a PEM file to trust for HTTPS, and
// PHANTOM_TEST_POSTGRES_URL (a connection_url OpenBao can reach, with
// {{username}} and {{password}} placeholders) enables the database cases
// there. Every run uses mounts and policies with a random suffix and
// removes them at the end, so it can be repeated against a dev server.
// Cases that need fault injection or a movable clock run only against the
// test server and skip with the reason elsewhere.
//
//	go test ./tests/contract/
package contract
