package monitor

import "github.com/prometheus/client_golang/prometheus"

// Values of the reason label of phantom_monitor_errors_total.
const (
	reasonLoad        = "load"         // a program set failed to load
	reasonAttach      = "attach"       // a program failed to attach
	reasonRingbufFull = "ringbuf_full" // the kernel dropped events
	reasonRingbufRead = "ringbuf_read" // reading the ring buffer failed
	reasonDecode      = "decode"       // a ring buffer record was malformed
	reasonRegister    = "register"     // a pod or volume map update failed
)

type metrics struct {
	events  *prometheus.CounterVec
	errors  *prometheus.CounterVec
	path    *prometheus.GaugeVec
	pods    prometheus.Gauge
	volumes prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		events: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phantom_monitor_events_total",
			Help: "Accesses to protected pods from outside the pod, by kind and action taken.",
		}, []string{"kind", "action"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "phantom_monitor_errors_total",
			Help: "Failures of the runtime-protection monitor, by reason.",
		}, []string{"reason"}),
		path: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "phantom_monitor_path",
			Help: "1 for the active attach path of the runtime-protection monitor (lsm, tracepoint or disabled), 0 for the others.",
		}, []string{"path"}),
		pods: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "phantom_monitor_pods",
			Help: "Pods registered with the runtime-protection monitor.",
		}),
		volumes: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "phantom_monitor_volumes",
			Help: "Phantom volumes registered with the runtime-protection monitor.",
		}),
	}
	for _, reason := range []string{reasonLoad, reasonAttach, reasonRingbufFull, reasonRingbufRead, reasonDecode, reasonRegister} {
		m.errors.WithLabelValues(reason)
	}
	if reg != nil {
		reg.MustRegister(m.events, m.errors, m.path, m.pods, m.volumes)
	}
	return m
}

func (m *metrics) setPath(active Path) {
	for _, p := range []Path{PathLSM, PathTracepoint, PathDisabled} {
		value := 0.0
		if p == active {
			value = 1
		}
		m.path.WithLabelValues(string(p)).Set(value)
	}
}
