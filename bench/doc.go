// Package bench holds snapsafe's benchmarks that span packages: the
// latency from a kernel restore signal to the generation page, and the
// side-by-side comparison of csprng with the generators it replaces. Run
// them with make bench.
package bench
