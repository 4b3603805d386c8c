package csprng

import (
	"fmt"
	"os"
	"strings"
	"testing"
	"unsafe"
)

// TestPrivateChunkFlags: without a provider, state memory is wiped in a
// forked child and left out of core dumps. The kernel shows both as
// VmFlags "wf" and "dd" in /proc/self/smaps.
func TestPrivateChunkFlags(t *testing.T) {
	b := privateChunk(chunkSize)
	smaps, err := os.ReadFile("/proc/self/smaps")
	if err != nil {
		t.Skipf("cannot read /proc/self/smaps: %v", err)
	}
	addr := fmt.Sprintf("%x-", uintptr(unsafe.Pointer(&b[0])))
	var inMapping bool
	for _, line := range strings.Split(string(smaps), "\n") {
		if strings.HasPrefix(line, addr) {
			inMapping = true
		}
		if inMapping && strings.HasPrefix(line, "VmFlags:") {
			flags := strings.Fields(line)[1:]
			has := func(f string) bool {
				for _, x := range flags {
					if x == f {
						return true
					}
				}
				return false
			}
			if !has("wf") || !has("dd") {
				t.Fatalf("mapping flags %v, want wf (wipe on fork) and dd (no dump)", flags)
			}
			return
		}
	}
	t.Fatalf("mapping at %s not found in /proc/self/smaps", addr)
}
