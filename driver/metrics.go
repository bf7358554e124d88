package driver

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	publishes       *prometheus.CounterVec
	publishDuration *prometheus.HistogramVec
	unpublishes     *prometheus.CounterVec
	volumes         prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		publishes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phantom_node_publish_total",
			Help: "NodePublishVolume calls by result (ok, error) and failure reason.",
		}, []string{"result", "reason"}),
		publishDuration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "phantom_node_publish_duration_seconds",
			Help:    "Duration of NodePublishVolume calls by result.",
			Buckets: []float64{.001, .002, .004, .008, .016, .032, .064, .128, .256, .512, 1, 2, 5, 10, 30},
		}, []string{"result"}),
		unpublishes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phantom_node_unpublish_total",
			Help: "NodeUnpublishVolume calls by result.",
		}, []string{"result"}),
		volumes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "phantom_node_volumes_mounted",
			Help: "Phantom volumes currently mounted on this node.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.publishes, m.publishDuration, m.unpublishes, m.volumes)
	}
	return m
}

func (m *metrics) observePublish(err error, d time.Duration) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.publishes.WithLabelValues(result, reasonOf(err)).Inc()
	m.publishDuration.WithLabelValues(result).Observe(d.Seconds())
}

func (m *metrics) observeUnpublish(err error) {
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.unpublishes.WithLabelValues(result).Inc()
}
