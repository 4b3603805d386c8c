package wire

import (
	"bytes"
	"errors"
	"testing"

	"github.com/snapsafe/snapsafe/internal/errs"
)

func TestEncodeDecodeRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		Type    Type
		Payload []byte
	}{
		{Status, nil},
		{Ack, U64(42)},
		{Region, U32(4096)},
		{StatusOK, []byte(`{"generation":1}`)},
		{Generation, U64(7)},
	} {
		b := Encode(tc.Type, 99, tc.Payload)
		m, err := Decode(b)
		if err != nil {
			t.Fatalf("decode(Encode(%#x)): %v", tc.Type, err)
		}
		if m.Type != tc.Type || m.ID != 99 || !bytes.Equal(m.Payload, tc.Payload) {
			t.Fatalf("round trip of %#x gave %+v", tc.Type, m)
		}
	}
	m, err := Decode(EncodeWaitDone(5, WaitNewGeneration, 12))
	if err != nil {
		t.Fatal(err)
	}
	if r, g := DecodeWaitDone(m); r != WaitNewGeneration || g != 12 || m.ID != 5 {
		t.Fatalf("wait done = %v %v id %d", r, g, m.ID)
	}
	m, err = Decode(EncodeError(3, CodeBadAck, "nope"))
	if err != nil {
		t.Fatal(err)
	}
	if e := DecodeError(m); !errors.Is(e, errs.ErrBadAck) || e.Message != "nope" {
		t.Fatalf("error reply = %+v", e)
	}
}

func TestDecodeRejects(t *testing.T) {
	good := Encode(Ack, 1, U64(1))
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"short header", good[:5]},
		{"version", append([]byte{2}, good[1:]...)},
		{"reserved", func() []byte { b := bytes.Clone(good); b[3] = 1; return b }()},
		{"unknown type", Encode(0x42, 1, nil)},
		{"short payload", good[:len(good)-1]},
		{"long payload", append(bytes.Clone(good), 0)},
		{"short error", Encode(Error, 1, []byte{1})},
		{"oversized", Encode(StatusOK, 1, make([]byte, MaxMessage))},
	} {
		if _, err := Decode(tc.b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: Decode = %v, want ErrMalformed", tc.name, err)
		}
	}
}

func TestEncodeErrorTruncates(t *testing.T) {
	b := EncodeError(1, CodeInternal, string(make([]byte, 2*MaxMessage)))
	if len(b) != MaxMessage {
		t.Fatalf("error message of %d bytes, want %d", len(b), MaxMessage)
	}
	if _, err := Decode(b); err != nil {
		t.Fatal(err)
	}
}

// FuzzDecode: the decoder never panics, accepts only well-framed messages,
// and what it accepts re-encodes to the same bytes.
func FuzzDecode(f *testing.F) {
	f.Add(Encode(Ack, 1, U64(1)))
	f.Add(Encode(Status, 0, nil))
	f.Add(EncodeWaitDone(1, WaitOK, 3))
	f.Add(EncodeError(1, CodeBadAck, "x"))
	f.Add([]byte{1, 0xff, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			return
		}
		if len(b) < HeaderSize || len(b) > MaxMessage {
			t.Fatalf("accepted %d bytes", len(b))
		}
		if got := Encode(m.Type, m.ID, m.Payload); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding %x gave %x", b, got)
		}
	})
}
