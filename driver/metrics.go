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
	leases          prometheus.Gauge
	renewals        *prometheus.CounterVec
	rotations       *prometheus.CounterVec
	recovered       prometheus.Counter
	graceServed     prometheus.Counter
	protectErrors   prometheus.Counter
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
		leases: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "phantom_leases_held",
			Help: "Leases of dynamic secrets held by the volumes on this node.",
		}),
		renewals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phantom_lease_renewals_total",
			Help: "Lease renewals by result: ok, capped (OpenBao granted less: max TTL near), failed (rejected: lease gone), unavailable.",
		}, []string{"result"}),
		rotations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phantom_rotations_total",
			Help: "Volume content rotations by reason: kv_changed, lease_max_ttl, lease_expired, lease_lost, after_outage.",
		}, []string{"reason"}),
		recovered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "phantom_volumes_recovered_total",
			Help: "Volumes taken over from the index at startup.",
		}),
		protectErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "phantom_node_protect_errors_total",
			Help: "Failed registrations of volumes with the runtime-protection monitor; publishing goes on without it.",
		}),
		graceServed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "phantom_cache_grace_served_total",
			Help: "Publishes that served a cached copy past its expiry because OpenBao was unavailable.",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.publishes, m.publishDuration, m.unpublishes, m.volumes, m.protectErrors,
			m.leases, m.renewals, m.rotations, m.recovered, m.graceServed)
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
