package provider

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/snapsafe/snapsafe/runtime/api"
	"github.com/snapsafe/snapsafe/runtime/internal/statedir"
	"github.com/snapsafe/snapsafe/runtime/internal/wire"
)

// fuzzProvider is one provider for every input of a fuzzing process:
// starting one per input would spend the budget on start-ups.
var fuzzProvider = sync.OnceValues(func() (*Provider, error) {
	dir, err := os.MkdirTemp("", "snapsafe-fuzz-")
	if err != nil {
		return nil, err
	}
	p, err := New(Config{Dir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		return nil, err
	}
	go p.Run(context.Background())
	<-p.Ready()
	return p, nil
})

// FuzzProviderRequests plays a hostile peer against a real provider: the
// input is a sequence of datagrams (each a 2-byte little-endian length and
// that many bytes) sent on one connection, fenced by a status request. The
// provider must answer or close, never hang or crash, keep the generation
// monotonic and keep serving an honest client.
func FuzzProviderRequests(f *testing.F) {
	seed := func(msgs ...[]byte) []byte {
		var b []byte
		for _, m := range msgs {
			b = binary.LittleEndian.AppendUint16(b, uint16(len(m)))
			b = append(b, m...)
		}
		return b
	}
	f.Add(seed(wire.Encode(wire.Status, 1, nil)))
	f.Add(seed(wire.Encode(wire.Watch, 1, nil), wire.Encode(wire.Ack, 2, wire.U64(1)), wire.Encode(wire.Wait, 3, wire.U64(0)), wire.Encode(wire.Cancel, 0, nil)))
	f.Add(seed(wire.Encode(wire.Bump, 1, wire.U64(1<<40)), wire.Encode(wire.Bump, 2, wire.U64(0))))
	f.Add(seed(wire.Encode(wire.Region, 1, wire.U32(4096)), wire.Encode(wire.Region, 2, wire.U32(0)), wire.Encode(wire.VMClock, 3, nil)))
	f.Add(seed([]byte("hello provider"), wire.Encode(wire.BumpOK, 9, nil)))
	f.Fuzz(func(t *testing.T, in []byte) {
		p, err := fuzzProvider()
		if err != nil {
			t.Fatal(err)
		}
		before := p.Generation()
		uc, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: filepath.Join(p.Dir(), statedir.SocketFile), Net: "unixpacket"})
		if err != nil {
			t.Fatal(err)
		}
		defer uc.Close()
		for len(in) >= 2 {
			n := int(binary.LittleEndian.Uint16(in))
			in = in[2:]
			n = min(n, len(in))
			if n == 0 {
				continue // a zero-length datagram reads as EOF on the provider's side
			}
			if _, err := uc.Write(in[:n]); err != nil {
				break // the provider closed the connection
			}
			in = in[n:]
		}
		// The fence: a status request with an id no seed uses. Its reply, or
		// EOF, must come; everything before it is drained.
		const fence = 0xfffffff0
		_, _ = uc.Write(wire.Encode(wire.Status, fence, nil))
		_ = uc.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, wire.MaxMessage)
		oob := make([]byte, wire.OOBSpace(4))
		for {
			m, f, n, err := wire.Read(uc, buf, oob)
			if f != nil {
				f.Close()
			}
			if err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatal("the provider neither answered the fence nor closed the connection")
				}
				break
			}
			if n == 0 {
				break
			}
			if m.Type == wire.StatusOK && m.ID == fence {
				var s api.Status
				if err := json.Unmarshal(m.Payload, &s); err != nil {
					t.Fatalf("status reply: %v", err)
				}
				break
			}
		}
		if g := p.Generation(); g < before {
			t.Fatalf("generation went down: %d -> %d", before, g)
		}
	})
}
