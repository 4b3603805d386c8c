package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// The control protocol. Every message is one SOCK_SEQPACKET datagram: an
// 8-byte header followed by a payload whose layout depends on the type.
// docs/ABI.md is the normative description; this file is its Go side.
//
//	offset 0  uint8  protocol version (Version)
//	offset 1  uint8  message type
//	offset 2  uint16 reserved, zero
//	offset 4  uint32 request id, chosen by the client and echoed in the reply;
//	                 zero in unsolicited events
//	offset 8  payload
const (
	Version    = 1
	HeaderSize = 8
	// MaxMessage bounds every message in both directions.
	MaxMessage = 4096
)

// msgType is the message type at offset 1.
type Type uint8

// Requests (client to provider) and their replies. A reply's type is the
// request's with the high bit set.
const (
	Status  Type = 0x01 // no payload → StatusOK
	Watch   Type = 0x02 // none, or uint64 last generation handled + label (≤ MaxLabel bytes) → WatchOK
	Ack     Type = 0x03 // uint64 generation → AckOK
	Wait    Type = 0x04 // uint64 generation the caller saw, 0 = current → WaitDone
	Cancel  Type = 0x05 // no payload: ends the connection's wait with WaitCancelled
	Bump    Type = 0x06 // uint64 minimum → BumpOK
	Region  Type = 0x07 // uint32 size → RegionOK + memfd (SCM_RIGHTS)
	VMClock Type = 0x08 // no payload → VMClockOK + the VMClock device (SCM_RIGHTS)
	Page    Type = 0x09 // no payload → PageOK + the sealed page memfd (SCM_RIGHTS)
	Lists   Type = 0x0a // no payload → ListsOK + a sealed memfd holding the watcher and hook lists (JSON)

	ReplyBit  Type = 0x80
	StatusOK       = Status | ReplyBit  // JSON object (Status)
	WatchOK        = Watch | ReplyBit   // uint64 current generation
	AckOK          = Ack | ReplyBit     // uint64 acknowledged generation
	WaitDone       = Wait | ReplyBit    // uint32 WaitResult, uint32 zero, uint64 current generation
	BumpOK         = Bump | ReplyBit    // uint64 new generation
	RegionOK       = Region | ReplyBit  // uint32 size of the region
	VMClockOK      = VMClock | ReplyBit // no payload
	PageOK         = Page | ReplyBit    // uint32 size of the page (4096)
	ListsOK        = Lists | ReplyBit   // uint32 length of the JSON in the memfd

	// msgGeneration is sent unsolicited to watchers (id 0) when the
	// generation changes: uint64 new generation.
	Generation Type = 0xc0
	// msgError replies to a request that failed: uint32 errCode, then a
	// UTF-8 message (at most MaxMessage-12 bytes).
	Error Type = 0xff
)

// waitResult is the outcome of an orchestrator wait.
type WaitResult uint32

const (
	WaitOK            WaitResult = 0 // no watcher is outdated
	WaitNewGeneration WaitResult = 1 // the generation moved, or the caller is an outdated watcher
	WaitCancelled     WaitResult = 2 // the caller cancelled
)

// errCode classifies a msgError.
type Code uint32

const (
	CodeMalformed    Code = 1  // the Message could not be decoded; the connection is closed
	CodeUnknown      Code = 2  // unknown Message type; the connection is closed
	CodeVersion      Code = 3  // unsupported protocol version; the connection is closed
	CodeNotPermitted Code = 4  // the peer may not do this
	CodeBadAck       Code = 5  // the acknowledged generation is not the current one
	CodeNotWatcher   Code = 6  // ack without watch
	CodeLimit        Code = 7  // a bound was exceeded (region size or count, one wait at a time)
	CodeInvalid      Code = 8  // an argument is out of range
	CodeInternal     Code = 9  // the provider failed; see its log
	CodeUnavailable  Code = 10 // the provider has no such resource (no VMClock device)
)

// message is one decoded datagram.
type Message struct {
	Type    Type
	ID      uint32
	Payload []byte
}

var ErrMalformed = errors.New("malformed message")

// decode parses one datagram. It checks only the framing and the payload
// length each type requires, and never panics on any input.
func Decode(b []byte) (Message, error) {
	if len(b) < HeaderSize {
		return Message{}, fmt.Errorf("%w: %d bytes, shorter than the %d-byte header", ErrMalformed, len(b), HeaderSize)
	}
	if len(b) > MaxMessage {
		return Message{}, fmt.Errorf("%w: %d bytes, longer than %d", ErrMalformed, len(b), MaxMessage)
	}
	if b[0] != Version {
		return Message{}, fmt.Errorf("%w: protocol version %d, want %d", ErrMalformed, b[0], Version)
	}
	if b[2] != 0 || b[3] != 0 {
		return Message{}, fmt.Errorf("%w: reserved header bytes are not zero", ErrMalformed)
	}
	m := Message{Type: Type(b[1]), ID: binary.LittleEndian.Uint32(b[4:]), Payload: b[HeaderSize:]}
	want, ok := payloadSize[m.Type]
	if !ok {
		return m, fmt.Errorf("%w: unknown message type %#x", ErrMalformed, uint8(m.Type))
	}
	if n := len(m.Payload); n < want.min || n > want.max {
		if want.min == want.max {
			return m, fmt.Errorf("%w: type %#x carries %d payload bytes, want %d", ErrMalformed, uint8(m.Type), n, want.min)
		}
		return m, fmt.Errorf("%w: type %#x carries %d payload bytes, want %d to %d", ErrMalformed, uint8(m.Type), n, want.min, want.max)
	}
	return m, nil
}

// MaxLabel bounds a watcher's label.
const MaxLabel = 64

// size is the range of payload lengths a type may carry.
type size struct{ min, max int }

func exactly(n int) size { return size{n, n} }

// payloadSize is the payload length each type may carry.
var payloadSize = map[Type]size{
	Status: exactly(0), Watch: {0, 8 + MaxLabel}, Ack: exactly(8), Wait: exactly(8), Cancel: exactly(0),
	Bump: exactly(8), Region: exactly(4), VMClock: exactly(0), Page: exactly(0), Lists: exactly(0),
	StatusOK: {2, MaxMessage}, WatchOK: exactly(8), AckOK: exactly(8), WaitDone: exactly(16), BumpOK: exactly(8),
	RegionOK: exactly(4), VMClockOK: exactly(0), PageOK: exactly(4), ListsOK: exactly(4),
	Generation: exactly(8), Error: {4, MaxMessage},
}

// encode builds a datagram.
func Encode(t Type, id uint32, payload []byte) []byte {
	b := make([]byte, HeaderSize, HeaderSize+len(payload))
	b[0] = Version
	b[1] = byte(t)
	binary.LittleEndian.PutUint32(b[4:], id)
	return append(b, payload...)
}

func U32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func U64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

func (m Message) U32() uint32 { return binary.LittleEndian.Uint32(m.Payload) }
func (m Message) U64() uint64 { return binary.LittleEndian.Uint64(m.Payload) }

func EncodeWaitDone(id uint32, r WaitResult, gen uint64) []byte {
	p := binary.LittleEndian.AppendUint32(nil, uint32(r))
	p = binary.LittleEndian.AppendUint32(p, 0)
	return Encode(WaitDone, id, binary.LittleEndian.AppendUint64(p, gen))
}

func DecodeWaitDone(m Message) (WaitResult, uint64) {
	return WaitResult(binary.LittleEndian.Uint32(m.Payload)), binary.LittleEndian.Uint64(m.Payload[8:])
}

// encodeError builds a msgError, truncating the text to fit.
func EncodeError(id uint32, c Code, text string) []byte {
	if room := MaxMessage - HeaderSize - 4; len(text) > room {
		text = text[:room]
	}
	return Encode(Error, id, append(U32(uint32(c)), text...))
}

// Classify returns the error code and request id with which the provider
// refuses a datagram that Decode rejected or that is not a request
// (docs/ABI.md §3): a wrong version is CodeVersion; a type that is not a
// request (unknown, or a reply or event type) is CodeUnknown; anything else
// is CodeMalformed. The id is the datagram's own whenever it carries a whole
// header of the right version, else 0.
func Classify(b []byte) (Code, uint32) {
	switch {
	case len(b) < HeaderSize:
		return CodeMalformed, 0
	case b[0] != Version:
		return CodeVersion, 0
	}
	id := binary.LittleEndian.Uint32(b[4:])
	if !Type(b[1]).IsRequest() {
		return CodeUnknown, id
	}
	return CodeMalformed, id
}

// IsRequest reports whether t is a request a client may send.
func (t Type) IsRequest() bool {
	_, known := payloadSize[t]
	return known && t&ReplyBit == 0
}

// EncodeWatch builds a watch request's payload: the last generation the
// watcher handled (0 for a new watcher) and its label.
func EncodeWatch(seen uint64, label string) []byte {
	if len(label) > MaxLabel {
		label = label[:MaxLabel]
	}
	return append(U64(seen), label...)
}

// DecodeWatch parses a watch request's payload. An empty payload is a new
// watcher without a label. A label must be printable UTF-8 without control
// characters, so that it can be shown and logged as it is.
func DecodeWatch(m Message) (seen uint64, label string, err error) {
	switch n := len(m.Payload); {
	case n == 0:
		return 0, "", nil
	case n < 8:
		return 0, "", fmt.Errorf("watch payload of %d bytes: send none, or a u64 generation and a label", n)
	}
	seen, label = binary.LittleEndian.Uint64(m.Payload), string(m.Payload[8:])
	if !utf8.ValidString(label) || strings.IndexFunc(label, func(r rune) bool { return !unicode.IsPrint(r) }) >= 0 {
		return 0, "", fmt.Errorf("watcher label %q is not printable UTF-8: use letters, digits and punctuation", label)
	}
	return seen, label, nil
}
