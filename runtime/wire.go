package runtime

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// The control protocol. Every message is one SOCK_SEQPACKET datagram: an
// 8-byte header followed by a payload whose layout depends on the type.
// docs/ABI.md is the normative description; this file is its Go side.
//
//	offset 0  uint8  protocol version (WireVersion)
//	offset 1  uint8  message type
//	offset 2  uint16 reserved, zero
//	offset 4  uint32 request id, chosen by the client and echoed in the reply;
//	                 zero in unsolicited events
//	offset 8  payload
const (
	WireVersion = 1
	headerSize  = 8
	// MaxMessage bounds every message in both directions.
	MaxMessage = 4096
)

// msgType is the message type at offset 1.
type msgType uint8

// Requests (client to provider) and their replies. A reply's type is the
// request's with the high bit set.
const (
	msgStatus  msgType = 0x01 // no payload → msgStatusOK
	msgWatch   msgType = 0x02 // no payload → msgWatchOK
	msgAck     msgType = 0x03 // uint64 generation → msgAckOK
	msgWait    msgType = 0x04 // uint64 generation the caller saw, 0 = current → msgWaitDone
	msgCancel  msgType = 0x05 // no payload: ends the connection's wait with waitCancelled
	msgBump    msgType = 0x06 // uint64 minimum → msgBumpOK
	msgRegion  msgType = 0x07 // uint32 size → msgRegionOK + memfd (SCM_RIGHTS)
	msgVMClock msgType = 0x08 // no payload → msgVMClockOK + the VMClock device (SCM_RIGHTS)

	replyBit     msgType = 0x80
	msgStatusOK          = msgStatus | replyBit  // JSON object (Status)
	msgWatchOK           = msgWatch | replyBit   // uint64 current generation
	msgAckOK             = msgAck | replyBit     // uint64 acknowledged generation
	msgWaitDone          = msgWait | replyBit    // uint32 waitResult, uint32 zero, uint64 current generation
	msgBumpOK            = msgBump | replyBit    // uint64 new generation
	msgRegionOK          = msgRegion | replyBit  // uint32 size of the region
	msgVMClockOK         = msgVMClock | replyBit // no payload

	// msgGeneration is sent unsolicited to watchers (id 0) when the
	// generation changes: uint64 new generation.
	msgGeneration msgType = 0xc0
	// msgError replies to a request that failed: uint32 errCode, then a
	// UTF-8 message (at most MaxMessage-12 bytes).
	msgError msgType = 0xff
)

// waitResult is the outcome of an orchestrator wait.
type waitResult uint32

const (
	waitOK            waitResult = 0 // no watcher is outdated
	waitNewGeneration waitResult = 1 // the generation moved, or the caller is an outdated watcher
	waitCancelled     waitResult = 2 // the caller cancelled
)

// errCode classifies a msgError.
type errCode uint32

const (
	codeMalformed    errCode = 1  // the message could not be decoded; the connection is closed
	codeUnknown      errCode = 2  // unknown message type; the connection is closed
	codeVersion      errCode = 3  // unsupported protocol version; the connection is closed
	codeNotPermitted errCode = 4  // the peer may not do this
	codeBadAck       errCode = 5  // the acknowledged generation is not the current one
	codeNotWatcher   errCode = 6  // ack without watch
	codeLimit        errCode = 7  // a bound was exceeded (region size or count, one wait at a time)
	codeInvalid      errCode = 8  // an argument is out of range
	codeInternal     errCode = 9  // the provider failed; see its log
	codeUnavailable  errCode = 10 // the provider has no such resource (no VMClock device)
)

// message is one decoded datagram.
type message struct {
	typ     msgType
	id      uint32
	payload []byte
}

var errMalformed = errors.New("malformed message")

// decode parses one datagram. It checks only the framing and the payload
// length each type requires, and never panics on any input.
func decode(b []byte) (message, error) {
	if len(b) < headerSize {
		return message{}, fmt.Errorf("%w: %d bytes, shorter than the %d-byte header", errMalformed, len(b), headerSize)
	}
	if len(b) > MaxMessage {
		return message{}, fmt.Errorf("%w: %d bytes, longer than %d", errMalformed, len(b), MaxMessage)
	}
	if b[0] != WireVersion {
		return message{}, fmt.Errorf("%w: protocol version %d, want %d", errMalformed, b[0], WireVersion)
	}
	if b[2] != 0 || b[3] != 0 {
		return message{}, fmt.Errorf("%w: reserved header bytes are not zero", errMalformed)
	}
	m := message{typ: msgType(b[1]), id: binary.LittleEndian.Uint32(b[4:]), payload: b[headerSize:]}
	want, ok := payloadSize[m.typ]
	if !ok {
		return m, fmt.Errorf("%w: unknown message type %#x", errMalformed, uint8(m.typ))
	}
	switch {
	case want >= 0 && len(m.payload) != want:
		return m, fmt.Errorf("%w: type %#x carries %d payload bytes, want %d", errMalformed, uint8(m.typ), len(m.payload), want)
	case want < 0 && len(m.payload) < -want:
		return m, fmt.Errorf("%w: type %#x carries %d payload bytes, want at least %d", errMalformed, uint8(m.typ), len(m.payload), -want)
	}
	return m, nil
}

// payloadSize is the exact payload size of each type, or minus the minimum
// size for variable-length payloads.
var payloadSize = map[msgType]int{
	msgStatus: 0, msgWatch: 0, msgAck: 8, msgWait: 8, msgCancel: 0, msgBump: 8, msgRegion: 4, msgVMClock: 0,
	msgStatusOK: -2, msgWatchOK: 8, msgAckOK: 8, msgWaitDone: 16, msgBumpOK: 8, msgRegionOK: 4, msgVMClockOK: 0,
	msgGeneration: 8, msgError: -4,
}

// encode builds a datagram.
func encode(t msgType, id uint32, payload []byte) []byte {
	b := make([]byte, headerSize, headerSize+len(payload))
	b[0] = WireVersion
	b[1] = byte(t)
	binary.LittleEndian.PutUint32(b[4:], id)
	return append(b, payload...)
}

func u32(v uint32) []byte { return binary.LittleEndian.AppendUint32(nil, v) }
func u64(v uint64) []byte { return binary.LittleEndian.AppendUint64(nil, v) }

func (m message) u32() uint32 { return binary.LittleEndian.Uint32(m.payload) }
func (m message) u64() uint64 { return binary.LittleEndian.Uint64(m.payload) }

func encodeWaitDone(id uint32, r waitResult, gen uint64) []byte {
	p := binary.LittleEndian.AppendUint32(nil, uint32(r))
	p = binary.LittleEndian.AppendUint32(p, 0)
	return encode(msgWaitDone, id, binary.LittleEndian.AppendUint64(p, gen))
}

func decodeWaitDone(m message) (waitResult, uint64) {
	return waitResult(binary.LittleEndian.Uint32(m.payload)), binary.LittleEndian.Uint64(m.payload[8:])
}

// encodeError builds a msgError, truncating the text to fit.
func encodeError(id uint32, c errCode, text string) []byte {
	if max := MaxMessage - headerSize - 4; len(text) > max {
		text = text[:max]
	}
	return encode(msgError, id, append(u32(uint32(c)), text...))
}

// RemoteError is an error reported by the provider.
type RemoteError struct {
	Code    uint32
	Message string
}

func (e *RemoteError) Error() string { return e.Message }

// Is maps remote error codes onto this package's sentinel errors, so that
// callers can use errors.Is(err, ErrNotPermitted) and the like.
func (e *RemoteError) Is(target error) bool {
	switch errCode(e.Code) {
	case codeNotPermitted:
		return target == ErrNotPermitted
	case codeBadAck:
		return target == ErrBadAck
	case codeNotWatcher:
		return target == ErrNotWatcher
	case codeLimit:
		return target == ErrLimit
	case codeUnavailable:
		return target == ErrUnavailable
	}
	return false
}

func decodeError(m message) *RemoteError {
	return &RemoteError{Code: m.u32(), Message: string(m.payload[4:])}
}
