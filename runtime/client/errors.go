package client

import (
	"github.com/snapsafe/snapsafe/internal/errs"
	"github.com/snapsafe/snapsafe/runtime/internal/wire"
)

// Errors returned (wrapped) by the client. Match them with errors.Is; each
// is the same value wherever snapsafe re-exports it.
var (
	// ErrNotSupported: attaching needs Linux (SOCK_SEQPACKET, memfd).
	ErrNotSupported = errs.ErrNotSupported
	// ErrNoProvider: no provider is running on the state directory.
	ErrNoProvider = errs.ErrNoProvider
	// ErrProviderGone: the connection to the provider was lost.
	ErrProviderGone = errs.ErrProviderGone
	// ErrRefused: the provider refused the connection, because a bound on
	// its clients was reached (too many connections of this uid, or of all
	// users); the error carries the provider's reason. It does not match
	// ErrProviderGone: the provider runs, and may admit a later connection.
	ErrRefused = errs.ErrRefused
	// ErrUntrusted: the state directory, its page or its socket belongs to
	// neither root nor the caller, may be written by group or others, or is
	// a symbolic link, or the provider runs as neither root nor the
	// directory's owner. The client refused to attach: such a provider could
	// forge the generation or read the client's wipe regions.
	ErrUntrusted = errs.ErrUntrusted
	// ErrNotPermitted: the request needs privilege the caller lacks.
	ErrNotPermitted = errs.ErrNotPermitted
	// ErrBadAck: an acknowledgement named a generation other than the
	// current one; it changed nothing.
	ErrBadAck = errs.ErrBadAck
	// ErrNotWatcher: an acknowledgement on a connection that is not a watcher.
	ErrNotWatcher = errs.ErrNotWatcher
	// ErrUnavailable: the provider has no such resource (no VMClock device).
	ErrUnavailable = errs.ErrUnavailable
	// ErrInvalid: an argument was out of range (a forced bump's floor too far
	// above the current generation); the request changed nothing.
	ErrInvalid = errs.ErrInvalid
	// ErrLimit: a bound of the provider was exceeded.
	ErrLimit = errs.ErrLimit
	// ErrNewGeneration: a newer generation arrived while waiting (or the
	// caller's own watcher is outdated). The caller must handle the new
	// generation and wait again.
	ErrNewGeneration = errs.ErrNewGeneration
)

// RemoteError is an error the provider reported; errors.Is matches it
// against the errors above.
type RemoteError = wire.RemoteError
