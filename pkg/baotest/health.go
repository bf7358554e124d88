package baotest

import (
	"encoding/json"
	"net/http"
	"strconv"
)

// serveHealth serves GET and HEAD sys/health with OpenBao's status-code
// query parameters.
func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	s.faults.count(OpHealth)
	if err := s.faults.takeFailure(requestToken(r) == s.rootToken); err != nil {
		writeError(w, err)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		writeError(w, &apiError{status: http.StatusMethodNotAllowed})
		return
	}

	status, body, ok := s.health(r)
	if !ok {
		writeError(w, &apiError{status: http.StatusBadRequest})
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	if r.Method == http.MethodGet {
		_ = json.NewEncoder(w).Encode(body)
	}
}

// health builds the sys/health body; ok is false for a malformed query.
func (s *Server) health(r *http.Request) (int, map[string]any, bool) {
	query := r.URL.Query()
	codes := map[string]int{"sealedcode": http.StatusServiceUnavailable, "activecode": http.StatusOK}
	for name := range codes {
		if v, found := query[name]; found {
			code, err := strconv.Atoi(v[0])
			if err != nil {
				return 0, nil, false
			}
			codes[name] = code
		}
	}
	for _, name := range []string{"uninitcode", "standbycode"} {
		if v, found := query[name]; found {
			if _, err := strconv.Atoi(v[0]); err != nil {
				return 0, nil, false
			}
		}
	}

	s.mu.Lock()
	sealed := s.sealed
	s.mu.Unlock()

	body := map[string]any{
		"initialized":                  true,
		"sealed":                       sealed,
		"standby":                      sealed,
		"replication_performance_mode": "disabled",
		"replication_dr_mode":          "disabled",
		"server_time_utc":              s.now().UTC().Unix(),
		"version":                      Version,
	}
	if sealed {
		body["replication_performance_mode"] = "unknown"
		body["replication_dr_mode"] = "unknown"
		return codes["sealedcode"], body, true
	}
	body["cluster_name"] = s.cluster.name
	body["cluster_id"] = s.cluster.id
	return codes["activecode"], body, true
}

func (s *Server) handleSealStatus(r *request) (*response, error) {
	body := map[string]any{
		"type":          "shamir",
		"initialized":   true,
		"sealed":        s.sealed,
		"t":             1,
		"n":             1,
		"progress":      0,
		"nonce":         "",
		"version":       Version,
		"build_date":    "",
		"migration":     false,
		"recovery_seal": false,
		"storage_type":  "inmem",
	}
	if !s.sealed {
		body["cluster_name"] = s.cluster.name
		body["cluster_id"] = s.cluster.id
	}
	raw, err := json.Marshal(body)
	if err != nil {
		return nil, err
	}
	return &response{raw: append(raw, '\n'), contentType: "application/json"}, nil
}
