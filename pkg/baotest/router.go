package baotest

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// handlerFunc serves one operation on a route. Unless the route is
// unlocked, it runs with Server.mu held.
type handlerFunc func(r *request) (*response, error)

type handler struct {
	op Op
	fn handlerFunc
}

// route is what a logical path resolves to: a handler per operation and the
// rules that apply before any handler runs.
type route struct {
	handlers map[operation]handler
	// unauthenticated routes (logins, health) need no token and no ACL check.
	unauthenticated bool
	// sudo routes additionally need the sudo capability, as OpenBao's
	// root-protected paths do.
	sudo bool
	// exists decides whether a write is a create or an update for the ACL
	// check. Without it every write is an update.
	exists func(r *request) bool
	// unlocked handlers take Server.mu themselves, so slow work such as key
	// generation does not block other requests.
	unlocked bool
	// sealExempt routes are served while the server is sealed.
	sealExempt bool
}

func newRoute() *route {
	return &route{handlers: map[operation]handler{}}
}

func (rt *route) read(op Op, fn handlerFunc) *route {
	rt.handlers[opRead] = handler{op: op, fn: fn}
	return rt
}

func (rt *route) list(op Op, fn handlerFunc) *route {
	rt.handlers[opList] = handler{op: op, fn: fn}
	return rt
}

// write registers fn for POST and PUT (create and update).
func (rt *route) write(op Op, fn handlerFunc) *route {
	rt.handlers[opCreate] = handler{op: op, fn: fn}
	rt.handlers[opUpdate] = handler{op: op, fn: fn}
	return rt
}

func (rt *route) del(op Op, fn handlerFunc) *route {
	rt.handlers[opDelete] = handler{op: op, fn: fn}
	return rt
}

// countedOp names the counter a request on this route increments.
func (rt *route) countedOp(op operation) Op {
	if rt == nil {
		return OpOther
	}
	if h, ok := rt.handlers[op]; ok {
		return h.op
	}
	if op == opUpdate {
		if h, ok := rt.handlers[opCreate]; ok {
			return h.op
		}
	}
	for _, h := range rt.handlers {
		return h.op
	}
	return OpOther
}

// ServeHTTP serves OpenBao's HTTP API. Faults apply in this order: latency,
// down (handled by the listener), injected failures, sealed.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !s.delay(r.Context()) {
		return
	}

	path, ok := logicalPath(r.URL)
	if !ok {
		writeError(w, &apiError{status: http.StatusNotFound})
		return
	}
	if path == "sys/health" {
		s.serveHealth(w, r)
		return
	}

	op, err := operationFor(r)
	if err != nil {
		writeError(w, err)
		return
	}
	if op == opList && !strings.HasSuffix(path, "/") {
		path += "/"
	}

	resp, err := s.serveLogical(r, op, path)
	writeResponse(w, op, resp, err)
}

// serveLogical runs one logical request through faults, sealing,
// authentication, authorization and the handler.
func (s *Server) serveLogical(r *http.Request, op operation, path string) (*response, error) {
	clientToken := requestToken(r)
	s.mu.Lock()
	counted := s.resolve(path).countedOp(op)
	s.mu.Unlock()
	s.faults.count(counted)

	if err := s.faults.takeFailure(clientToken == s.rootToken); err != nil {
		s.logRequest(r, path, counted, err)
		return nil, err
	}

	if err := checkUnsupportedHeaders(r); err != nil {
		return nil, err
	}
	data, err := parseData(r, op)
	if err != nil {
		return nil, err
	}
	req := &request{op: op, path: path, data: data, now: s.now()}
	resp, err := s.dispatch(req, clientToken)
	s.logRequest(r, path, counted, err)
	return resp, err
}

// checkUnsupportedHeaders rejects namespaces and response wrapping, which
// this server does not implement, rather than ignore them.
func checkUnsupportedHeaders(r *http.Request) error {
	if ns := strings.Trim(r.Header.Get("X-Vault-Namespace"), "/"); ns != "" && ns != "root" {
		return unsupportedByTestServer("the namespace header (X-Vault-Namespace)")
	}
	if r.Header.Get("X-Vault-Wrap-TTL") != "" {
		return unsupportedByTestServer("response wrapping (X-Vault-Wrap-TTL)")
	}
	return nil
}

// dispatch authenticates and authorizes req, then runs its handler.
func (s *Server) dispatch(req *request, clientToken string) (*response, error) {
	s.mu.Lock()
	locked := true
	defer func() {
		if locked {
			s.mu.Unlock()
		}
	}()

	s.expireLocked(req.now)
	rt := s.resolve(req.path)
	if s.sealed && (rt == nil || !rt.sealExempt) {
		return nil, errSealed
	}

	if rt == nil || !rt.unauthenticated {
		tok, err := s.authenticateLocked(clientToken, req.now)
		if err != nil {
			return nil, err
		}
		req.token = tok
		if err := s.authorizeLocked(req, rt); err != nil {
			return nil, err
		}
	}
	if rt == nil {
		return nil, routeNotFound(req.path)
	}

	h, ok := rt.handlers[req.op]
	if !ok {
		return nil, errUnsupportedOperation
	}
	if rt.unlocked {
		locked = false
		s.mu.Unlock()
	}
	return h.fn(req)
}

// routeNotFound is OpenBao's error for a path that no mount serves.
func routeNotFound(path string) error {
	return &apiError{
		status: http.StatusNotFound,
		errors: []string{fmt.Sprintf("no handler for route %q. route entry not found.", path)},
	}
}

// authenticateLocked returns the live token for clientToken and spends one
// of its uses.
func (s *Server) authenticateLocked(clientToken string, now time.Time) (*token, error) {
	if clientToken == "" {
		return nil, errPermissionDenied
	}
	tok := s.liveTokenLocked(clientToken, now)
	if tok == nil {
		return nil, errPermissionDenied
	}
	s.spendUseLocked(tok, now)
	return tok, nil
}

// authorizeLocked applies the token's ACL policies to req, settling create
// versus update through the route's existence check first.
func (s *Server) authorizeLocked(req *request, rt *route) error {
	if req.op == opUpdate && rt != nil && rt.exists != nil && !rt.exists(req) {
		req.op = opCreate
	}
	if req.token.isRoot() {
		return nil
	}

	acl := s.aclForTokenLocked(req.token)
	caps := acl.capabilities(req.path, req.op)
	if !caps.allows(req.op) {
		return errACLDenied
	}
	if rt != nil && rt.sudo && req.op != opRead && req.op != opList && caps&capSudo == 0 {
		return errACLDenied
	}
	return nil
}

// resolve finds the route for a logical path, or nil. Callers hold s.mu.
func (s *Server) resolve(path string) *route {
	switch {
	case strings.HasPrefix(path, "sys/"):
		return s.sysRoute(strings.TrimPrefix(path, "sys/"))
	case strings.HasPrefix(path, "auth/"):
		return mountedRoute(s.findMount(s.auths, strings.TrimPrefix(path, "auth/")))
	default:
		return mountedRoute(s.findMount(s.mounts, path))
	}
}

// mountedRoute returns the route of the mount's backend. A path the
// backend does not serve gets OpenBao's 404 "unsupported path".
func mountedRoute(m *mount, rest string) *route {
	if m == nil {
		return nil
	}
	if rt := m.backend.route(rest); rt != nil {
		return rt
	}
	fail := func(*request) (*response, error) { return nil, errUnsupportedPath }
	return newRoute().read(OpOther, fail).list(OpOther, fail).write(OpOther, fail).del(OpOther, fail)
}

// findMount returns the mount with the longest path that prefixes path and
// the remainder of path below it.
func (s *Server) findMount(table map[string]*mount, path string) (*mount, string) {
	var best *mount
	for p, m := range table {
		if (strings.HasPrefix(path, p) || path+"/" == p) && (best == nil || len(p) > len(best.path)) {
			best = m
		}
	}
	if best == nil {
		return nil, ""
	}
	if len(path) < len(best.path) {
		return best, ""
	}
	return best, path[len(best.path):]
}

// logRequest writes one debug line per request. It logs the status of a
// failure but not its message, which may echo request input.
func (s *Server) logRequest(r *http.Request, path string, op Op, err error) {
	if !s.log.Enabled(r.Context(), slog.LevelDebug) {
		return
	}
	attrs := []any{"method", r.Method, "path", path, "op", string(op)}
	var apiErr *apiError
	switch {
	case errors.As(err, &apiErr):
		attrs = append(attrs, "status", apiErr.status)
	case err != nil:
		attrs = append(attrs, "status", http.StatusInternalServerError)
	}
	s.log.Debug("request served", attrs...)
}
