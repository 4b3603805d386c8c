package runtime

import (
	"bytes"
	"errors"
	"testing"
)

func TestEncodeDecodeRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		typ     msgType
		payload []byte
	}{
		{msgStatus, nil},
		{msgAck, u64(42)},
		{msgRegion, u32(4096)},
		{msgStatusOK, []byte(`{"generation":1}`)},
		{msgGeneration, u64(7)},
	} {
		b := encode(tc.typ, 99, tc.payload)
		m, err := decode(b)
		if err != nil {
			t.Fatalf("decode(encode(%#x)): %v", tc.typ, err)
		}
		if m.typ != tc.typ || m.id != 99 || !bytes.Equal(m.payload, tc.payload) {
			t.Fatalf("round trip of %#x gave %+v", tc.typ, m)
		}
	}
	m, err := decode(encodeWaitDone(5, waitNewGeneration, 12))
	if err != nil {
		t.Fatal(err)
	}
	if r, g := decodeWaitDone(m); r != waitNewGeneration || g != 12 || m.id != 5 {
		t.Fatalf("wait done = %v %v id %d", r, g, m.id)
	}
	m, err = decode(encodeError(3, codeBadAck, "nope"))
	if err != nil {
		t.Fatal(err)
	}
	if e := decodeError(m); !errors.Is(e, ErrBadAck) || e.Message != "nope" {
		t.Fatalf("error reply = %+v", e)
	}
}

func TestDecodeRejects(t *testing.T) {
	good := encode(msgAck, 1, u64(1))
	for _, tc := range []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"short header", good[:5]},
		{"version", append([]byte{2}, good[1:]...)},
		{"reserved", func() []byte { b := bytes.Clone(good); b[3] = 1; return b }()},
		{"unknown type", encode(0x42, 1, nil)},
		{"short payload", good[:len(good)-1]},
		{"long payload", append(bytes.Clone(good), 0)},
		{"short error", encode(msgError, 1, []byte{1})},
		{"oversized", encode(msgStatusOK, 1, make([]byte, MaxMessage))},
	} {
		if _, err := decode(tc.b); !errors.Is(err, errMalformed) {
			t.Errorf("%s: decode = %v, want errMalformed", tc.name, err)
		}
	}
}

func TestEncodeErrorTruncates(t *testing.T) {
	b := encodeError(1, codeInternal, string(make([]byte, 2*MaxMessage)))
	if len(b) != MaxMessage {
		t.Fatalf("error message of %d bytes, want %d", len(b), MaxMessage)
	}
	if _, err := decode(b); err != nil {
		t.Fatal(err)
	}
}

// FuzzDecode: the decoder never panics, accepts only well-framed messages,
// and what it accepts re-encodes to the same bytes.
func FuzzDecode(f *testing.F) {
	f.Add(encode(msgAck, 1, u64(1)))
	f.Add(encode(msgStatus, 0, nil))
	f.Add(encodeWaitDone(1, waitOK, 3))
	f.Add(encodeError(1, codeBadAck, "x"))
	f.Add([]byte{1, 0xff, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decode(b)
		if err != nil {
			return
		}
		if len(b) < headerSize || len(b) > MaxMessage {
			t.Fatalf("accepted %d bytes", len(b))
		}
		if got := encode(m.typ, m.id, m.payload); !bytes.Equal(got, b) {
			t.Fatalf("re-encoding %x gave %x", b, got)
		}
	})
}
