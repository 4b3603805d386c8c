package wire

import "github.com/snapsafe/snapsafe/internal/errs"

// RemoteError is an error reported by the provider in an Error reply.
type RemoteError struct {
	Code    Code
	Message string
}

func (e *RemoteError) Error() string { return e.Message }

// Is maps remote error codes onto snapsafe's sentinel errors, so that
// callers can use errors.Is(err, client.ErrNotPermitted) and the like.
func (e *RemoteError) Is(target error) bool {
	switch e.Code {
	case CodeNotPermitted:
		return target == errs.ErrNotPermitted
	case CodeBadAck:
		return target == errs.ErrBadAck
	case CodeNotWatcher:
		return target == errs.ErrNotWatcher
	case CodeLimit:
		return target == errs.ErrLimit
	case CodeInvalid:
		return target == errs.ErrInvalid
	case CodeUnavailable:
		return target == errs.ErrUnavailable
	}
	return false
}

// DecodeError returns the error an Error reply carries.
func DecodeError(m Message) *RemoteError {
	return &RemoteError{Code: Code(m.U32()), Message: string(m.Payload[4:])}
}
