package bao

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	logins   *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phantom_bao_requests_total",
			Help: "OpenBao requests by operation and result.",
		}, []string{"op", "result"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "phantom_bao_request_duration_seconds",
			Help:    "Duration of OpenBao requests by operation.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"op"}),
		logins: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phantom_bao_logins_total",
			Help: "Logins to OpenBao with a pod's service-account token, by result.",
		}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.requests, m.duration, m.logins)
	}
	return m
}

func (m *metrics) observe(op, result string, d time.Duration) {
	m.requests.WithLabelValues(op, result).Inc()
	m.duration.WithLabelValues(op).Observe(d.Seconds())
}
