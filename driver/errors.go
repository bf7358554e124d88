package driver

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/phantom-sec/phantom/pkg/bao"
	"github.com/phantom-sec/phantom/pkg/fetch"
	"github.com/phantom-sec/phantom/pkg/satoken"
	"github.com/phantom-sec/phantom/pkg/spec"
	"github.com/phantom-sec/phantom/pkg/tmpfs"
)

var (
	// errInvalidRequest marks a request that breaks the CSI contract:
	// a missing volume id, target path or capability.
	errInvalidRequest = errors.New("invalid request")
	// errTargetConflict marks a volume id already published at another
	// target path.
	errTargetConflict = errors.New("volume already published elsewhere")
)

// codeMap lists, in order, the sentinel of each failure and its gRPC code.
// Kubelet shows the message of every code as a pod event, so messages are
// written for the pod's owner.
var codeMap = []struct {
	err  error
	code codes.Code
}{
	{errInvalidRequest, codes.InvalidArgument},
	{spec.ErrInvalid, codes.InvalidArgument},
	{fetch.ErrLayout, codes.InvalidArgument},
	{tmpfs.ErrInvalidPath, codes.InvalidArgument},
	{tmpfs.ErrTooLarge, codes.InvalidArgument},
	{satoken.ErrMalformed, codes.InvalidArgument},
	{satoken.ErrNoToken, codes.FailedPrecondition},
	{satoken.ErrMismatch, codes.PermissionDenied},
	{satoken.ErrExpired, codes.Unauthenticated},
	{errTargetConflict, codes.FailedPrecondition},
	{tmpfs.ErrForeignMount, codes.FailedPrecondition},
	{tmpfs.ErrNotDirectory, codes.FailedPrecondition},
	{bao.ErrPermissionDenied, codes.PermissionDenied},
	{bao.ErrNotFound, codes.NotFound},
	{bao.ErrInvalidRequest, codes.InvalidArgument},
	{bao.ErrUnavailable, codes.Unavailable},
	{context.DeadlineExceeded, codes.DeadlineExceeded},
	{context.Canceled, codes.Canceled},
}

// toStatus maps err to a gRPC status error. It is the only place that
// chooses codes; an error it does not know becomes Internal.
func toStatus(err error) error {
	if err == nil {
		return nil
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codeOf(err), err.Error())
}

func codeOf(err error) codes.Code {
	for _, m := range codeMap {
		if errors.Is(err, m.err) {
			return m.code
		}
	}
	return codes.Internal
}

// reasonOf is the bounded `reason` label of the publish metric.
func reasonOf(err error) string {
	switch {
	case err == nil:
		return "none"
	case errors.Is(err, satoken.ErrNoToken):
		return "no_token"
	case errors.Is(err, satoken.ErrMismatch), errors.Is(err, satoken.ErrMalformed), errors.Is(err, satoken.ErrExpired):
		return "token_rejected"
	case errors.Is(err, bao.ErrPermissionDenied):
		return "permission_denied"
	case errors.Is(err, bao.ErrNotFound):
		return "not_found"
	case errors.Is(err, bao.ErrUnavailable):
		return "openbao_unavailable"
	case errors.Is(err, tmpfs.ErrTooLarge):
		return "too_large"
	case errors.Is(err, tmpfs.ErrForeignMount), errors.Is(err, tmpfs.ErrNotDirectory), errors.Is(err, errTargetConflict):
		return "target_conflict"
	case codeOf(err) == codes.InvalidArgument:
		return "invalid_argument"
	default:
		return "internal"
	}
}

func invalidRequestf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errInvalidRequest, fmt.Sprintf(format, args...))
}
