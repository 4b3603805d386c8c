package provider

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/snapsafe/snapsafe/runtime/internal/statedir"
	"github.com/snapsafe/snapsafe/runtime/internal/wire"
	"github.com/snapsafe/snapsafe/shm"
	"golang.org/x/sys/unix"
)

// TestPageRequest: request 0x09 returns the page memfd, sealed, with its
// size, to anyone.
func TestPageRequest(t *testing.T) {
	dir := t.TempDir()
	startProvider(t, dir)
	uc := rawConn(t, dir)
	if _, err := uc.Write(wire.Encode(wire.Page, 7, nil)); err != nil {
		t.Fatal(err)
	}
	buf, oob := make([]byte, wire.MaxMessage), make([]byte, wire.OOBSpace(1))
	uc.SetReadDeadline(time.Now().Add(5 * time.Second))
	m, f, _, err := wire.Read(uc, buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	if m.Type != wire.PageOK || m.ID != 7 || m.U32() != shm.PageSize || f == nil {
		t.Fatalf("reply %+v, descriptor %v", m, f)
	}
	defer f.Close()
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	want := unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_FUTURE_WRITE | unix.F_SEAL_SEAL
	if err != nil || seals&want != want {
		t.Fatalf("seals %#x, %v; want %#x", seals, err, want)
	}
	p, err := shm.MapPageMemfd(f)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if p.Generation() != 1 {
		t.Fatalf("page memfd shows %d, want 1", p.Generation())
	}
	if _, err := uc.Write(wire.Encode(wire.Page, 8, []byte{0})); err != nil {
		t.Fatal(err)
	}
	if m, err := readMsg(t, uc); err != nil || m.Type != wire.Error || wire.DecodeError(m).Code != wire.CodeMalformed {
		t.Fatalf("page request with a payload: %+v, %v; want a malformed error", m, err)
	}
}

// TestCExampleMemfd builds docs/examples/generation.c — written from
// docs/ABI.md alone — and checks that it gets the sealed page over the
// socket and reads it while the page file is truncated, which would kill
// a reader of the file.
func TestCExampleMemfd(t *testing.T) {
	cc, err := exec.LookPath("cc")
	if err != nil {
		t.Skip("no C compiler (cc): apt-get install gcc")
	}
	bin := filepath.Join(t.TempDir(), "generation")
	if out, err := exec.Command(cc, "-O2", "-Wall", "-Werror", "-o", bin, "../../docs/examples/generation.c").CombinedOutput(); err != nil {
		t.Fatalf("building the C example: %v\n%s", err, out)
	}
	// Keep the file truncated for the test; restore the interval after the
	// provider's cleanup.
	old := pageCheckInterval
	pageCheckInterval = time.Hour
	t.Cleanup(func() { pageCheckInterval = old })
	dir := t.TempDir()
	tp := startProvider(t, dir)
	if _, err := tp.Bump(shm.ReasonForced, 1234); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(filepath.Join(dir, statedir.PageFile), 0); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(bin, "--socket", filepath.Join(dir, statedir.SocketFile)).CombinedOutput()
	if err != nil {
		t.Fatalf("the C example on the socket: %v\n%s", err, out)
	}
	want := "generation 1234\nwiped 1234\n"
	if !strings.HasPrefix(string(out), want) || !strings.Contains(string(out), fmt.Sprintf("pid %d\nbackend manual\n", os.Getpid())) {
		t.Fatalf("the C example printed:\n%s", out)
	}
}
