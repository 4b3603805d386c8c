package provider_test

import (
	"os/exec"
	"strings"
	"testing"

	"github.com/snapsafe/snapsafe/internal/testprovider"
	"github.com/snapsafe/snapsafe/runtime/provider"
)

// TestIntegrationConformancePython drives the page and the control protocol
// from a second language: docs/examples/conformance.py, written from
// docs/ABI.md alone with Python's socket, mmap and fcntl modules, against a
// real provider. A disagreement between the document and the code fails it.
func TestIntegrationConformancePython(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 is needed for the ABI conformance test: apt-get install python3 (.ci/run installs it): %v", err)
	}
	// The script forces bumps: root or the provider's own user may.
	dir := t.TempDir()
	testprovider.Start(t, provider.Config{Dir: dir})
	out, err := exec.Command(py, "../../docs/examples/conformance.py", "--dir", dir).CombinedOutput()
	t.Logf("conformance.py:\n%s", out)
	if err != nil {
		t.Fatalf("conformance.py failed: %v", err)
	}
	if !strings.Contains(string(out), " passed, 0 failed") {
		t.Fatal("conformance.py did not report its checks")
	}
}
