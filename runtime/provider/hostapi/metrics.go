package hostapi

import (
	"net/http"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/snapsafe/snapsafe/shm"
)

// metrics are the snapsafe_ families of GET /metrics. Everything but the
// adapt histogram is read from the provider's status at scrape time, so the
// provider keeps one set of counters.
type metrics struct {
	reg   *prometheus.Registry
	adapt prometheus.Histogram
}

var (
	descGeneration = prometheus.NewDesc("snapsafe_generation", "The current generation.", nil, nil)
	descBumps      = prometheus.NewDesc("snapsafe_bumps_total", "Bumps of the generation since the provider started, by reason.", []string{"reason"}, nil)
	descWatchers   = prometheus.NewDesc("snapsafe_watchers", "Watchers by state: acked and outdated (tracked), untracked.", []string{"state"}, nil)
	descClients    = prometheus.NewDesc("snapsafe_clients", "Connected clients of the control socket.", nil, nil)
	descRefused    = prometheus.NewDesc("snapsafe_refused_total", "Connections refused over the bounds on clients.", nil, nil)
	descReseeded   = prometheus.NewDesc("snapsafe_kernel_reseeded", "1 when the kernel RNG is known to have been reseeded for the current generation.", nil, nil)
	descBuild      = prometheus.NewDesc("snapsafe_build_info", "The provider's build: 1, with its version and Go version.", []string{"version", "goversion"}, nil)
)

func newMetrics() *metrics {
	m := &metrics{reg: prometheus.NewRegistry()}
	m.adapt = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "snapsafe_adapt_seconds",
		Help:    "Time from a bump until no tracked watcher (or restore hook) was outdated.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	})
	m.reg.MustRegister(m.adapt, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *metrics) register(p Provider) { m.reg.MustRegister(statusCollector{p}) }

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{MaxRequestsInFlight: 4})
}

type statusCollector struct{ p Provider }

func (statusCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descGeneration, descBumps, descWatchers, descClients, descRefused, descReseeded, descBuild} {
		ch <- d
	}
}

func (c statusCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.p.StatusWithLists()
	ch <- prometheus.MustNewConstMetric(descGeneration, prometheus.GaugeValue, float64(s.Generation))
	for _, r := range shm.Reasons {
		ch <- prometheus.MustNewConstMetric(descBumps, prometheus.CounterValue, float64(s.BumpsByReason[r.String()]), r.String())
	}
	var acked, outdated, untracked int
	for _, w := range s.WatcherList {
		switch {
		case !w.Tracked:
			untracked++
		case w.Outdated:
			outdated++
		default:
			acked++
		}
	}
	ch <- prometheus.MustNewConstMetric(descWatchers, prometheus.GaugeValue, float64(acked), "acked")
	ch <- prometheus.MustNewConstMetric(descWatchers, prometheus.GaugeValue, float64(outdated), "outdated")
	ch <- prometheus.MustNewConstMetric(descWatchers, prometheus.GaugeValue, float64(untracked), "untracked")
	ch <- prometheus.MustNewConstMetric(descClients, prometheus.GaugeValue, float64(s.Clients))
	ch <- prometheus.MustNewConstMetric(descRefused, prometheus.CounterValue, float64(s.Refused))
	reseeded := 0.0
	if s.KernelReseeded {
		reseeded = 1
	}
	ch <- prometheus.MustNewConstMetric(descReseeded, prometheus.GaugeValue, reseeded)
	ch <- prometheus.MustNewConstMetric(descBuild, prometheus.GaugeValue, 1, buildVersion(), goVersion())
}

func buildVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" {
		return bi.Main.Version
	}
	return "(devel)"
}

func goVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		return bi.GoVersion
	}
	return "unknown"
}
