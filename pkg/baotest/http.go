package baotest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/uuid"
)

// operation is the logical operation of a request, as OpenBao derives it
// from the HTTP method.
type operation string

const (
	opRead   operation = "read"
	opList   operation = "list"
	opCreate operation = "create"
	opUpdate operation = "update"
	opDelete operation = "delete"
	opPatch  operation = "patch"
)

// maxBodyBytes caps request bodies; OpenBao's default is 32 MiB.
const maxBodyBytes = 32 << 20

// apiError is an OpenBao error response: a status and its errors list.
type apiError struct {
	status int
	errors []string
}

func (e *apiError) Error() string {
	return fmt.Sprintf("status %d: %s", e.status, strings.Join(e.errors, "; "))
}

// Errors whose bodies are fixed by OpenBao 2.6.
var (
	// errPermissionDenied is returned for a missing, unknown or expired token.
	errPermissionDenied = &apiError{status: http.StatusForbidden, errors: []string{"permission denied"}}
	// errACLDenied is returned when the token's policies do not grant the
	// operation; OpenBao wraps it in a multierror.
	errACLDenied = &apiError{status: http.StatusForbidden, errors: []string{"1 error occurred:\n\t* permission denied\n\n"}}
	errSealed    = &apiError{status: http.StatusServiceUnavailable, errors: []string{"Vault is sealed"}}
	// errEmptyNotFound is a read or list that found nothing.
	errEmptyNotFound        = &apiError{status: http.StatusNotFound, errors: []string{}}
	errUnsupportedOperation = &apiError{status: http.StatusMethodNotAllowed, errors: []string{"unsupported operation"}}
	errUnsupportedPath      = &apiError{status: http.StatusNotFound, errors: []string{"unsupported path"}}
)

func badRequest(format string, args ...any) error {
	return &apiError{status: http.StatusBadRequest, errors: []string{fmt.Sprintf(format, args...)}}
}

func forbidden(format string, args ...any) error {
	return &apiError{status: http.StatusForbidden, errors: []string{fmt.Sprintf(format, args...)}}
}

func internalError(format string, args ...any) error {
	return &apiError{status: http.StatusInternalServerError, errors: []string{fmt.Sprintf(format, args...)}}
}

// unsupportedByTestServer rejects a feature of real OpenBao that this server
// does not implement, so a test never passes on a silently ignored option.
func unsupportedByTestServer(what string) error {
	return badRequest("baotest: %s is not supported by the test server", what)
}

// request is one parsed API call.
type request struct {
	op    operation
	path  string // logical path without "/v1/", with a trailing "/" for lists
	data  map[string]any
	token *token // nil on unauthenticated routes
	now   time.Time
}

// response is the result of a handler. A nil *response means no content:
// a 404 with an empty errors list for reads and lists, 204 otherwise.
type response struct {
	status        int
	data          any
	auth          map[string]any
	leaseID       string
	renewable     bool
	leaseDuration int64
	warnings      []string
	// raw replaces the JSON envelope (health, PEM downloads).
	raw         []byte
	contentType string
}

// envelope is the JSON body of every successful logical response.
type envelope struct {
	RequestID     string   `json:"request_id"`
	LeaseID       string   `json:"lease_id"`
	Renewable     bool     `json:"renewable"`
	LeaseDuration int64    `json:"lease_duration"`
	Data          any      `json:"data"`
	WrapInfo      any      `json:"wrap_info"`
	Warnings      []string `json:"warnings"`
	Auth          any      `json:"auth"`
}

// operationFor maps the HTTP method (and ?list=true) to the operation.
func operationFor(r *http.Request) (operation, error) {
	switch r.Method {
	case http.MethodGet:
		if list := r.URL.Query().Get("list"); list != "" {
			if ok, _ := parseBool(list); ok {
				return opList, nil
			}
		}
		return opRead, nil
	case "LIST":
		return opList, nil
	case http.MethodPost, http.MethodPut:
		return opUpdate, nil
	case http.MethodDelete:
		return opDelete, nil
	case http.MethodPatch:
		return opPatch, nil
	default:
		return "", &apiError{status: http.StatusMethodNotAllowed, errors: []string{}}
	}
}

func parseBool(s string) (bool, error) {
	return fieldBool(map[string]any{"v": s}, "v", false)
}

// parseData reads the request's parameters: the JSON body for writes, the
// query string for reads.
func parseData(r *http.Request, op operation) (map[string]any, error) {
	data := map[string]any{}
	if op == opRead || op == opList {
		for key, values := range r.URL.Query() {
			if len(values) == 1 {
				data[key] = values[0]
			} else {
				data[key] = anySlice(values)
			}
		}
		return data, nil
	}

	body, err := io.ReadAll(io.LimitReader(r.Body, maxBodyBytes+1))
	if err != nil {
		return nil, badRequest("failed to read request body: %v", err)
	}
	if len(body) > maxBodyBytes {
		return nil, &apiError{status: http.StatusRequestEntityTooLarge, errors: []string{"http: request body too large"}}
	}
	if len(bytes.TrimSpace(body)) == 0 {
		return data, nil
	}

	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	if err := dec.Decode(&data); err != nil {
		return nil, badRequest("failed to parse JSON input: %v", err)
	}
	return data, nil
}

func anySlice(values []string) []any {
	out := make([]any, len(values))
	for i, v := range values {
		out[i] = v
	}
	return out
}

// requestToken returns the client token from X-Vault-Token or a bearer
// Authorization header.
func requestToken(r *http.Request) string {
	if t := r.Header.Get("X-Vault-Token"); t != "" {
		return t
	}
	if auth := r.Header.Get("Authorization"); auth != "" {
		if t, ok := strings.CutPrefix(auth, "Bearer "); ok {
			return strings.TrimSpace(t)
		}
	}
	return ""
}

// logicalPath extracts the logical path from the URL, or reports false when
// the URL is outside /v1/.
func logicalPath(u *url.URL) (string, bool) {
	p, ok := strings.CutPrefix(u.Path, "/v1/")
	if !ok || p == "" {
		return "", false
	}
	return p, true
}

// writeResponse sends resp (or err) the way OpenBao's HTTP layer does.
func writeResponse(w http.ResponseWriter, op operation, resp *response, err error) {
	if err != nil {
		writeError(w, err)
		return
	}
	if resp == nil {
		if op == opRead || op == opList {
			writeError(w, errEmptyNotFound)
			return
		}
		w.WriteHeader(http.StatusNoContent)
		return
	}
	if resp.raw != nil {
		w.Header().Set("Content-Type", resp.contentType)
		w.WriteHeader(statusOr(resp.status, http.StatusOK))
		_, _ = w.Write(resp.raw)
		return
	}
	writeJSON(w, statusOr(resp.status, http.StatusOK), envelopeFor(resp))
}

func envelopeFor(resp *response) envelope {
	env := envelope{
		RequestID:     uuid.NewString(),
		LeaseID:       resp.leaseID,
		Renewable:     resp.renewable,
		LeaseDuration: resp.leaseDuration,
		Data:          resp.data,
		Warnings:      resp.warnings,
	}
	if resp.auth != nil {
		env.Auth = resp.auth
	}
	return env
}

func statusOr(status, def int) int {
	if status == 0 {
		return def
	}
	return status
}

// writeError sends {"errors": [...]} with the error's status. An error that
// is not an *apiError becomes a 500 carrying its message.
func writeError(w http.ResponseWriter, err error) {
	var apiErr *apiError
	if !errors.As(err, &apiErr) {
		apiErr = &apiError{status: http.StatusInternalServerError, errors: []string{err.Error()}}
	}
	errs := apiErr.errors
	if errs == nil {
		errs = []string{}
	}
	if apiErr.status == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "1")
	}
	writeJSON(w, apiErr.status, map[string]any{"errors": errs})
}

func writeJSON(w http.ResponseWriter, status int, body any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(body)
}

// listResponse returns the keys as OpenBao's list operations do, or nil
// (404, empty errors) when there are none.
func listResponse(keys []string) *response {
	if len(keys) == 0 {
		return nil
	}
	return &response{data: map[string]any{"keys": keys}}
}
