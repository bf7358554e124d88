package cache

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	hits   *prometheus.CounterVec
	misses prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		hits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phantom_cache_hits_total",
			Help: "Secret copies served from the cache by tier: hot (memory), sealed (tmpfs, after a restart), grace (past expiry, OpenBao unreachable).",
		}, []string{"tier"}),
		misses: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "phantom_cache_misses_total",
			Help: "Cache lookups that found no servable copy.",
		}),
	}
	for _, tier := range []Tier{TierHot, TierSealed, TierGrace} {
		m.hits.WithLabelValues(string(tier))
	}
	if reg != nil {
		reg.MustRegister(m.hits, m.misses)
	}
	return m
}
