package kernelrng

import (
	"errors"
	"os"
	"os/exec"
	"syscall"
	"testing"

	"github.com/snapsafe/snapsafe/internal/testdevice"
	"github.com/snapsafe/snapsafe/internal/testuser"
)

func TestMain(m *testing.M) {
	if os.Getenv("KERNELRNG_TEST_CHILD") == "1" {
		// Run unprivileged: the reseed must be refused.
		err := Reseed(make([]byte, 32), nil)
		if errors.Is(err, ErrNotPermitted) {
			os.Exit(0)
		}
		os.Stderr.WriteString("unprivileged Reseed: " + errString(err) + "\n")
		os.Exit(1)
	}
	os.Exit(m.Run())
}

func errString(err error) string {
	if err == nil {
		return "succeeded"
	}
	return err.Error()
}

// TestIntegrationReseed: root reseeds the real kernel RNG; uid 65534 is
// refused with ErrNotPermitted.
func TestIntegrationReseed(t *testing.T) {
	testdevice.RequireRoot(t, "RNDADDENTROPY and RNDRESEEDCRNG need CAP_SYS_ADMIN")
	if err := Reseed([]byte("host entropy for the test, 32 B!"), []byte("cpu")); err != nil {
		t.Fatalf("Reseed as root: %v", err)
	}
	if err := Reseed(nil, nil); err != nil {
		t.Fatalf("Reseed with no entropy as root: %v", err)
	}
	bin := testuser.Executable(t) // go test's build directory is private to root
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), "KERNELRNG_TEST_CHILD=1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: testuser.Nobody}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as uid 65534: %v\n%s", err, out)
	}
}
