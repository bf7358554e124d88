package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Log keys.
const (
	logKeyNamespace = "namespace"
	logKeyPod       = "pod"
	logKeyUID       = "uid"
	logKeyResult    = "result"
	logKeyReason    = "reason"
	logKeyError     = "error"
)

// maxReviewBytes bounds the request body. The API server limits objects to
// about 3 MiB; an AdmissionReview of a CREATE carries one object.
const maxReviewBytes = 7 << 20

// HandlerConfig configures a Handler.
type HandlerConfig struct {
	Mutator *Mutator
	Metrics *Metrics
	Logger  *slog.Logger
}

// Handler serves AdmissionReview requests on /mutate.
type Handler struct {
	cfg HandlerConfig
}

var _ http.Handler = (*Handler)(nil)

// NewHandler returns a Handler.
func NewHandler(cfg HandlerConfig) (*Handler, error) {
	switch {
	case cfg.Mutator == nil:
		return nil, errors.New("new handler: Mutator is nil")
	case cfg.Metrics == nil:
		return nil, errors.New("new handler: Metrics is nil")
	case cfg.Logger == nil:
		return nil, errors.New("new handler: Logger is nil")
	}
	return &Handler{cfg: cfg}, nil
}

// ServeHTTP handles one AdmissionReview. A request that is not a valid
// AdmissionReview gets an HTTP error, which the API server treats as a
// failed call. Every decision about a pod is an HTTP 200 review.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	defer func() { h.cfg.Metrics.duration.Observe(time.Since(start).Seconds()) }()

	review, status, err := decodeReview(w, r)
	if err != nil {
		h.cfg.Metrics.admissions.WithLabelValues(ResultError).Inc()
		h.cfg.Logger.Warn("invalid admission request", logKeyError, err)
		http.Error(w, err.Error(), status)
		return
	}

	response := h.review(r, review.Request)
	review.Request = nil
	review.Response = response
	body, err := json.Marshal(review)
	if err != nil {
		h.cfg.Logger.Error("encode admission response", logKeyError, err)
		http.Error(w, "encode admission response", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

// decodeReview reads an AdmissionReview v1 with a request.
func decodeReview(w http.ResponseWriter, r *http.Request) (*admissionv1.AdmissionReview, int, error) {
	if r.Method != http.MethodPost {
		return nil, http.StatusMethodNotAllowed, fmt.Errorf("method %s is not allowed: use POST", r.Method)
	}
	if mediaType, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mediaType != "application/json" {
		return nil, http.StatusUnsupportedMediaType, fmt.Errorf("content type %q is not supported: send application/json", r.Header.Get("Content-Type"))
	}

	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxReviewBytes))
	if err != nil {
		return nil, http.StatusRequestEntityTooLarge, fmt.Errorf("read admission review: %w", err)
	}
	review := &admissionv1.AdmissionReview{}
	if err := json.Unmarshal(body, review); err != nil {
		return nil, http.StatusBadRequest, fmt.Errorf("decode admission review: %w", err)
	}
	if review.APIVersion != admissionv1.SchemeGroupVersion.String() || review.Kind != "AdmissionReview" {
		return nil, http.StatusBadRequest, fmt.Errorf("admission review has apiVersion %q and kind %q: send admission.k8s.io/v1 AdmissionReview", review.APIVersion, review.Kind)
	}
	if review.Request == nil {
		return nil, http.StatusBadRequest, errors.New("admission review has no request")
	}
	return review, http.StatusOK, nil
}

// review decides one admission request and counts the result.
func (h *Handler) review(r *http.Request, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	response := &admissionv1.AdmissionResponse{UID: req.UID, Allowed: true}
	logger := h.cfg.Logger.With(logKeyNamespace, req.Namespace, logKeyUID, req.UID)

	if req.Kind.Group != "" || req.Kind.Kind != "Pod" || req.Operation != admissionv1.Create || req.SubResource != "" {
		h.cfg.Metrics.admissions.WithLabelValues(ResultSkipped).Inc()
		logger.Debug("admission skipped", logKeyReason, fmt.Sprintf("%s of %s/%s", req.Operation, req.Kind.Kind, req.SubResource))
		return response
	}

	pod := &corev1.Pod{}
	if err := json.Unmarshal(req.Object.Raw, pod); err != nil {
		return h.fail(logger, response, http.StatusBadRequest, fmt.Errorf("decode pod: %w", err))
	}
	logger = logger.With(logKeyPod, podName(pod))

	decision, err := h.cfg.Mutator.Mutate(r.Context(), pod, req.Namespace)
	if err != nil {
		return h.fail(logger, response, http.StatusInternalServerError, err)
	}
	h.cfg.Metrics.admissions.WithLabelValues(decision.Result).Inc()

	switch decision.Result {
	case ResultMutated:
		patchType := admissionv1.PatchTypeJSONPatch
		response.Patch = decision.Patch
		response.PatchType = &patchType
		logger.Debug("pod mutated")
	case ResultRejected:
		response.Allowed = false
		response.Result = &metav1.Status{Status: metav1.StatusFailure, Code: decision.Code, Message: decision.Message, Reason: statusReason(decision.Code)}
		logger.Info("pod rejected", logKeyReason, decision.Message)
	default:
		logger.Debug("admission skipped", logKeyReason, decision.Reason)
	}
	return response
}

// fail denies a request the webhook could not decide.
func (h *Handler) fail(logger *slog.Logger, response *admissionv1.AdmissionResponse, code int32, err error) *admissionv1.AdmissionResponse {
	h.cfg.Metrics.admissions.WithLabelValues(ResultError).Inc()
	logger.Error("admission failed", logKeyError, err)
	response.Allowed = false
	response.Result = &metav1.Status{Status: metav1.StatusFailure, Code: code, Message: "phantom: " + err.Error(), Reason: statusReason(code)}
	return response
}

func statusReason(code int32) metav1.StatusReason {
	switch code {
	case http.StatusBadRequest:
		return metav1.StatusReasonBadRequest
	case http.StatusForbidden:
		return metav1.StatusReasonForbidden
	default:
		return metav1.StatusReasonInternalError
	}
}

// podName returns the pod's name, or its generateName: pods of a workload
// get their name only after admission.
func podName(pod *corev1.Pod) string {
	if pod.Name != "" {
		return pod.Name
	}
	return pod.GenerateName
}
