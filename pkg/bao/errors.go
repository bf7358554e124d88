package bao

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/openbao/openbao/api/v2"
)

// Sentinel errors that callers map to gRPC codes. Every error returned by
// this package wraps one of them or is a context error.
var (
	// ErrPermissionDenied means OpenBao rejected the request for the pod's
	// identity: a login that failed or a path its policies do not grant.
	ErrPermissionDenied = errors.New("permission denied")
	// ErrNotFound means the path holds no secret.
	ErrNotFound = errors.New("not found")
	// ErrUnavailable means OpenBao could not serve the request: unreachable,
	// sealed, rate limited or failing with a 5xx status.
	ErrUnavailable = errors.New("OpenBao unavailable")
	// ErrInvalidRequest means OpenBao rejected the request as malformed.
	ErrInvalidRequest = errors.New("invalid request")
)

// classify wraps err with the sentinel that matches its cause. The message
// keeps OpenBao's error strings (they describe claims and paths, never
// values) but never the response body.
func classify(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}

	var respErr *api.ResponseError
	if errors.As(err, &respErr) {
		detail := strings.Join(respErr.Errors, "; ")
		detail = strings.ReplaceAll(strings.ReplaceAll(detail, "\n", " "), "\t", "")
		detail = strings.Join(strings.Fields(detail), " ")
		if detail == "" {
			detail = http.StatusText(respErr.StatusCode)
		}
		switch code := respErr.StatusCode; {
		case code == http.StatusForbidden || code == http.StatusUnauthorized:
			return fmt.Errorf("%w (HTTP %d: %s)", ErrPermissionDenied, code, detail)
		case code == http.StatusNotFound:
			return fmt.Errorf("%w (HTTP %d)", ErrNotFound, code)
		case code == http.StatusTooManyRequests || code >= 500:
			return fmt.Errorf("%w (HTTP %d: %s)", ErrUnavailable, code, detail)
		default:
			return fmt.Errorf("%w (HTTP %d: %s)", ErrInvalidRequest, code, detail)
		}
	}

	var urlErr *url.Error
	var netErr net.Error
	if errors.As(err, &urlErr) || errors.As(err, &netErr) {
		return fmt.Errorf("%w: %s", ErrUnavailable, redactURLError(err))
	}
	return fmt.Errorf("%w: %w", ErrUnavailable, err)
}

// redactURLError keeps the transport failure of a url.Error ("connection
// refused") without the request URL's query string.
func redactURLError(err error) string {
	var urlErr *url.Error
	if errors.As(err, &urlErr) {
		return fmt.Sprintf("%s %s: %v", urlErr.Op, stripQuery(urlErr.URL), urlErr.Err)
	}
	return err.Error()
}

func stripQuery(raw string) string {
	if i := strings.IndexByte(raw, '?'); i >= 0 {
		return raw[:i]
	}
	return raw
}

// resultOf turns an error into the bounded `result` label of the request
// metric.
func resultOf(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, ErrPermissionDenied):
		return "denied"
	case errors.Is(err, ErrNotFound):
		return "not_found"
	case errors.Is(err, ErrInvalidRequest):
		return "invalid"
	default:
		return "unavailable"
	}
}
