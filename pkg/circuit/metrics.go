package circuit

import "github.com/prometheus/client_golang/prometheus"

type metrics struct {
	state       prometheus.Gauge
	transitions *prometheus.CounterVec
	probes      *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		state: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "phantom_circuit_state",
			Help: "State of the circuit breaker in front of OpenBao: 0 closed, 1 half-open, 2 open.",
		}),
		transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phantom_circuit_transitions_total",
			Help: "Circuit breaker transitions by the state entered (closed, half_open, open).",
		}, []string{"to"}),
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phantom_circuit_probes_total",
			Help: "Circuit breaker probes by result (ok, unreachable: no connection, failed: reached the service and failed).",
		}, []string{"result"}),
	}
	if reg != nil {
		reg.MustRegister(m.state, m.transitions, m.probes)
	}
	return m
}
