package provider

import (
	"testing"
	"time"

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
