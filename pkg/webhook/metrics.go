package webhook

import (
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the admission metrics of the webhook.
type Metrics struct {
	admissions *prometheus.CounterVec
	duration   prometheus.Histogram
}

// NewMetrics creates the admission metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) (*Metrics, error) {
	m := &Metrics{
		admissions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phantom_webhook_admissions_total",
			Help: "Pod admission requests handled, by result: mutated, skipped, rejected or error.",
		}, []string{"result"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "phantom_webhook_mutation_duration_seconds",
			Help:    "Time to decode, decide and answer one admission request, in seconds.",
			Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.1, 0.5},
		}),
	}
	for _, c := range []prometheus.Collector{m.admissions, m.duration} {
		if err := reg.Register(c); err != nil {
			return nil, fmt.Errorf("register webhook metrics: %w", err)
		}
	}
	for _, result := range []string{ResultMutated, ResultSkipped, ResultRejected, ResultError} {
		m.admissions.WithLabelValues(result)
	}
	return m, nil
}
