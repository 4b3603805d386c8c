package provider

import (
	"os"
	"testing"
	"time"

	"github.com/snapsafe/snapsafe/internal/eventually"
	"github.com/snapsafe/snapsafe/runtime/internal/wire"
	"golang.org/x/sys/unix"
)

// TestLongDatagramsRefused: serve reads into a buffer far shorter than
// wire.MaxMessage; a longer datagram, up to and past MaxMessage, is refused
// with the code and id its header calls for (docs/ABI.md §3), as when it
// was read whole.
func TestLongDatagramsRefused(t *testing.T) {
	dir := t.TempDir()
	startProvider(t, dir)
	long := func(typ wire.Type, id uint32, size int) []byte {
		return append(wire.Encode(typ, id, nil), make([]byte, size-wire.HeaderSize)...)
	}
	version2 := long(wire.Status, 5, 300)
	version2[0] = 2
	for _, tc := range []struct {
		name string
		msg  []byte
		code wire.Code
		id   uint32
	}{
		{"watch, longest label and one byte", long(wire.Watch, 1, maxRequest+1), wire.CodeMalformed, 1},
		{"status, 300 bytes", long(wire.Status, 2, 300), wire.CodeMalformed, 2},
		{"status reply, the largest message", long(wire.StatusOK, 3, wire.MaxMessage), wire.CodeUnknown, 3},
		{"unknown type, 1000 bytes", long(0x33, 4, 1000), wire.CodeUnknown, 4},
		{"version 2, 300 bytes", version2, wire.CodeVersion, 0},
		{"past the largest message", long(wire.Ack, 6, wire.MaxMessage+8), wire.CodeMalformed, 6},
	} {
		t.Run(tc.name, func(t *testing.T) { wantErrorReply(t, dir, tc.msg, tc.code, tc.id) })
	}
	// The longest request is still served.
	uc := rawConn(t, dir)
	label := make([]byte, wire.MaxLabel)
	for i := range label {
		label[i] = 'a'
	}
	if _, err := uc.Write(wire.Encode(wire.Watch, 9, wire.EncodeWatch(0, string(label)))); err != nil {
		t.Fatal(err)
	}
	if m, err := readMsg(t, uc); err != nil || m.Type != wire.WatchOK || m.ID != 9 {
		t.Fatalf("watch with a %d-byte label: %+v, %v", wire.MaxLabel, m, err)
	}
}

// TestSentDescriptorsNotKept: descriptors a client passes with a request
// never stay open in the provider.
func TestSentDescriptorsNotKept(t *testing.T) {
	dir := t.TempDir()
	startProvider(t, dir)
	uc := rawConn(t, dir)
	f, err := os.Open(os.DevNull)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	status := func(id uint32, oob []byte) {
		t.Helper()
		if _, _, err := uc.WriteMsgUnix(wire.Encode(wire.Status, id, nil), oob, nil); err != nil {
			t.Fatal(err)
		}
		if m, err := readMsg(t, uc); err != nil || m.Type != wire.StatusOK || m.ID != id {
			t.Fatalf("status: %+v, %v", m, err)
		}
	}
	status(1, nil)
	before := countFDs(t)
	rights := unix.UnixRights(int(f.Fd()), int(f.Fd()), int(f.Fd()))
	for id := uint32(2); id < 12; id++ {
		status(id, rights)
	}
	eventually.True(t, "no descriptor kept", func() bool { return countFDs(t) <= before })
}

// TestUnreadRepliesDisconnect: a client that sends requests and never reads
// the replies is disconnected once a reply has waited writeTimeout, and
// nobody else waits for it meanwhile (docs/ABI.md §3). Its requests are
// acks, the ones a reactor answers itself while the reply fits.
func TestUnreadRepliesDisconnect(t *testing.T) {
	dir := t.TempDir()
	tp := startProvider(t, dir)
	good := attach(t, dir)
	hog := rawConn(t, dir)
	if _, err := hog.Write(wire.Encode(wire.Watch, 1, nil)); err != nil {
		t.Fatal(err)
	}
	if m, err := readMsg(t, hog); err != nil || m.Type != wire.WatchOK {
		t.Fatalf("watch reply %+v, %v", m, err)
	}
	ack := wire.Encode(wire.Ack, 2, wire.U64(tp.Generation()))
	sent := 0
	for {
		hog.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		if _, err := hog.Write(ack); err != nil {
			break // the provider stopped reading: its reply to us waits
		}
		sent++
	}
	start := time.Now()
	if s := status(t, good); s.Clients != 2 {
		t.Fatalf("%d clients while the hog's reply waits, want 2", s.Clients)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("a status request took %v while the hog's reply waited", d)
	}
	eventually.True(t, "the hog to be disconnected", func() bool { return status(t, good).Clients == 1 })
	if d := time.Since(start); d < writeTimeout/2 {
		t.Fatalf("the hog was disconnected after %v, before its reply could have waited %v", d, writeTimeout)
	}
	t.Logf("%d acks sent before the provider stopped reading; disconnected after %v", sent, time.Since(start))
}
