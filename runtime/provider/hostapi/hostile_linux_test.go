package hostapi_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/snapsafe/snapsafe/internal/testdevice"
	"github.com/snapsafe/snapsafe/internal/testuser"
)

// dialChildEnv makes the test binary, run as uid 65534 by
// TestUnixListenRefusesOthers, dial the unix socket it names and exit 0
// only if connect fails with EACCES.
const dialChildEnv = "HOSTAPI_TEST_DIAL_UNIX"

func init() {
	path := os.Getenv(dialChildEnv)
	if path == "" {
		return
	}
	c, err := net.Dial("unix", path)
	if err == nil {
		c.Close()
		fmt.Fprintf(os.Stderr, "uid %d connected to %s\n", os.Getuid(), path)
		os.Exit(1)
	}
	if !errors.Is(err, syscall.EACCES) {
		fmt.Fprintf(os.Stderr, "dialing %s: %v, want EACCES\n", path, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// TestUnixListenRefusesOthers: a unix: endpoint is a socket of mode 0660,
// which serves its user but which uid 65534 (neither its owner nor in its
// group), though it may reach the directory, cannot connect to.
func TestUnixListenRefusesOthers(t *testing.T) {
	testdevice.RequireRoot(t, "to connect as uid 65534")
	path := filepath.Join(testuser.SharedTmp(t), "host.sock")
	startOn(t, "unix:"+path)
	fi, err := os.Lstat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != 0o660 {
		t.Fatalf("%s: mode %v, want a socket of mode 0660", path, fi.Mode())
	}
	// Its user is served: the refusal below is the mode's doing.
	hc := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", path)
	}}}
	resp, err := hc.Get("http://host/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/status as root over %s: %d, want 200", path, resp.StatusCode)
	}
	cmd := exec.Command(testuser.Executable(t), "-test.run=^$")
	cmd.Env = append(os.Environ(), dialChildEnv+"="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: testuser.Nobody}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("as uid 65534: %v\n%s", err, strings.TrimSpace(string(out)))
	}
}

// TestOversizedHeader: a request whose header exceeds the server's bound
// is answered 431, not read on.
func TestOversizedHeader(t *testing.T) {
	e := start(t)
	req, _ := http.NewRequest("GET", e.base+"/v1/status", nil)
	req.Header.Set("X-Big", strings.Repeat("a", 16<<10))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("a 16 KiB header: %d, want 431", resp.StatusCode)
	}
}
