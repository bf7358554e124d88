package baotest

import (
	"context"
	"net/http"
	"sync"
	"time"
)

// Op names a kind of request for the counters.
type Op string

// Counted operations. A request counts once it reaches the server, whatever
// its outcome, including injected failures and sealed responses. Requests
// that find the server down are not counted.
const (
	// OpLogin is a login to any JWT or Kubernetes auth mount.
	OpLogin Op = "login"
	// OpKVRead reads a KV version 2 secret (GET data/...).
	OpKVRead Op = "kv_read"
	// OpKVList lists KV version 2 keys (LIST metadata/...).
	OpKVList Op = "kv_list"
	// OpKVWrite writes a KV version 2 secret.
	OpKVWrite Op = "kv_write"
	// OpKVDelete deletes, undeletes or destroys KV version 2 data.
	OpKVDelete Op = "kv_delete"
	// OpKVMetadata reads or writes KV version 2 metadata.
	OpKVMetadata Op = "kv_metadata"
	// OpDynamicRead issues a dynamic secret (database/creds, pki/issue).
	OpDynamicRead Op = "dynamic_read"
	// OpLeaseRenew renews a lease (sys/leases/renew).
	OpLeaseRenew Op = "lease_renew"
	// OpLeaseRevoke revokes a lease (sys/leases/revoke).
	OpLeaseRevoke Op = "lease_revoke"
	// OpLeaseLookup looks up a lease (sys/leases/lookup).
	OpLeaseLookup Op = "lease_lookup"
	// OpTokenLookup looks up a token (lookup-self or lookup).
	OpTokenLookup Op = "token_lookup"
	// OpTokenRenew renews a token (renew-self or renew).
	OpTokenRenew Op = "token_renew"
	// OpTokenRevoke revokes a token (revoke-self or revoke).
	OpTokenRevoke Op = "token_revoke"
	// OpTokenCreate creates a token (auth/token/create).
	OpTokenCreate Op = "token_create"
	// OpHealth is GET or HEAD sys/health.
	OpHealth Op = "health"
	// OpSealStatus is GET sys/seal-status.
	OpSealStatus Op = "seal_status"
	// OpAdmin is configuration: mounts, auth methods, policies, roles,
	// engine configuration, capabilities.
	OpAdmin Op = "admin"
	// OpOther is any request no route serves.
	OpOther Op = "other"
)

// faultState holds the injected faults and the counters, under a lock of
// its own so that they are never blocked by a request holding Server.mu.
type faultState struct {
	mu         sync.Mutex
	latency    time.Duration
	failLeft   int
	failStatus int
	counts     map[Op]int
}

func (f *faultState) init() {
	f.counts = map[Op]int{}
}

// failureMessages are the error strings OpenBao 2.6 sends with each status
// a client may meet in an outage.
var failureMessages = map[int]string{
	http.StatusInternalServerError: "internal error",
	http.StatusBadGateway:          "upstream rate limited",
	http.StatusServiceUnavailable:  "node not active but active cluster node not found",
	http.StatusTooManyRequests:     "rate limit quota exceeded",
}

// SetDown takes the server off the network (true) or back (false). While
// down the port refuses connections and open connections are closed; back
// up, it listens on the same port again. It panics if the port was taken by
// another process in between, since later results would be meaningless.
func (s *Server) SetDown(down bool) {
	s.netMu.Lock()
	defer s.netMu.Unlock()
	if s.closed || down == s.down {
		return
	}

	if down {
		if err := s.stopLocked(); err != nil {
			s.log.Error("stop listener for SetDown", "error", err)
		}
		s.down = true
		return
	}

	// The kernel may hold the port briefly after close; retry for a second.
	var err error
	for range 50 {
		if err = s.listen(s.addr); err == nil {
			s.down = false
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
	panic("baotest: SetDown(false): " + err.Error())
}

// SetLatency adds d to every request before it is served. Zero removes it.
func (s *Server) SetLatency(d time.Duration) {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.latency = d
}

// FailNext makes the next n requests that do not carry the root token fail
// with status and an OpenBao-shaped body: 500 "internal error", 502
// "upstream rate limited", 503 "node not active but active cluster node not
// found", 429 "rate limit quota exceeded" (with Retry-After), or the status
// text for other codes. Root-token requests (provisioning) pass untouched.
// A later call replaces the earlier one; n <= 0 clears it.
func (s *Server) FailNext(n int, status int) {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	s.faults.failLeft = max(n, 0)
	s.faults.failStatus = status
}

// Seal makes every API request fail with 503 "Vault is sealed", except
// sys/health (503 with sealed: true) and sys/seal-status. State survives.
func (s *Server) Seal() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sealed = true
}

// Unseal undoes Seal.
func (s *Server) Unseal() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sealed = false
}

// Count returns how many requests of kind op reached the server since
// start or the last ResetCounts.
func (s *Server) Count(op Op) int {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	return s.faults.counts[op]
}

// ResetCounts sets every counter to zero.
func (s *Server) ResetCounts() {
	s.faults.mu.Lock()
	defer s.faults.mu.Unlock()
	clear(s.faults.counts)
}

func (f *faultState) count(op Op) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.counts[op]++
}

// takeFailure consumes one injected failure, unless the request is an
// admin (root token) request.
func (f *faultState) takeFailure(admin bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if admin || f.failLeft == 0 {
		return nil
	}
	f.failLeft--

	msg, ok := failureMessages[f.failStatus]
	if !ok {
		msg = http.StatusText(f.failStatus)
	}
	return &apiError{status: f.failStatus, errors: []string{msg}}
}

// delay sleeps for the configured latency; false means the client gave up.
func (s *Server) delay(ctx context.Context) bool {
	s.faults.mu.Lock()
	d := s.faults.latency
	s.faults.mu.Unlock()
	if d <= 0 {
		return true
	}

	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-timer.C:
		return true
	case <-ctx.Done():
		return false
	}
}
