package bench

import (
	"slices"
	"testing"
	"time"

	"github.com/snapsafe/snapsafe/backend"
	"github.com/snapsafe/snapsafe/internal/testdevice"
	"github.com/snapsafe/snapsafe/internal/testprovider"
	"github.com/snapsafe/snapsafe/runtime/client"
	"github.com/snapsafe/snapsafe/runtime/provider"
)

// signalToPage measures, for every iteration, the time from causing a
// kernel signal (trigger) to the provider's page showing the new
// generation, as a client's one-load probe sees it, and reports p50 and
// p99.
func signalToPage(b *testing.B, opts backend.ACPIOptions, trigger func(testing.TB)) {
	testdevice.Require(b)
	src, err := backend.NewACPISource(opts)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { src.Close() }) // after the provider stops: cleanups run last first
	p := testprovider.Start(b, provider.Config{Dir: b.TempDir(), Source: src})
	c, err := client.Attach(p.Dir())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()

	var lat []time.Duration
	for b.Loop() {
		g := c.Generation()
		start := time.Now()
		trigger(b)
		for c.Generation() == g {
			if time.Since(start) > 5*time.Second {
				b.Fatal("the page did not move within 5s of the signal")
			}
		}
		lat = append(lat, time.Since(start))
	}
	slices.Sort(lat)
	pct := func(q float64) float64 { return float64(lat[int(q*float64(len(lat)-1))].Nanoseconds()) / 1e3 }
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
	b.ReportMetric(float64(len(lat)), "events")
}

// BenchmarkUeventToPage: a root-written synthetic uevent on the VMGENID
// device, through NETLINK_KOBJECT_UEVENT, to the page.
func BenchmarkUeventToPage(b *testing.B) {
	signalToPage(b, backend.ACPIOptions{AcceptSynthetic: true}, func(tb testing.TB) { testdevice.Synthesize(tb) })
}

// BenchmarkKmsgToPage: a facility-0 kernel log record, through /dev/kmsg,
// to the page.
func BenchmarkKmsgToPage(b *testing.B) {
	signalToPage(b, backend.ACPIOptions{KmsgMatch: testdevice.MalformedMessage}, testdevice.LogMalformed)
}
