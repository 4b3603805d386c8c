//go:build amd64 && !purego && linux

package chacha20

import (
	"os"
	"slices"
	"strings"
	"testing"
)

// The kernel picked at start-up is the best one the kernel's own view of the
// CPU allows: /proc/cpuinfo lists a vector extension only when Linux also
// saves its registers, so it checks cpuid from an independent source.
func TestImplMatchesCPUInfo(t *testing.T) {
	info, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		t.Skipf("reading /proc/cpuinfo: %v (needs procfs mounted)", err)
	}
	var flags []string
	for _, line := range strings.Split(string(info), "\n") {
		if name, value, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(name) == "flags" {
			flags = strings.Fields(value)
			break
		}
	}
	if flags == nil {
		t.Fatal("no flags line in /proc/cpuinfo")
	}
	has := func(f string) bool { return slices.Contains(flags, f) }
	want := []string{"generic"}
	if has("avx2") {
		want = append([]string{"avx2"}, want...)
	}
	if has("avx2") && has("avx512f") && has("avx512vl") {
		want = append([]string{"avx512"}, want...)
	}
	var got []string
	for _, k := range impls {
		got = append(got, k.name)
	}
	if !slices.Equal(got, want) {
		t.Errorf("kernels %q, want %q for CPU flags avx2=%t avx512f=%t avx512vl=%t", got, want, has("avx2"), has("avx512f"), has("avx512vl"))
	}
	if Impl() != want[0] {
		t.Errorf("Impl() = %q, want %q", Impl(), want[0])
	}
}
