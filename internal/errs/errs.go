// Package errs defines each of snapsafe's sentinel errors once. The public
// packages re-export the ones their users match (shm.ErrNotSupported,
// client.ErrNotSupported and backend.ErrNotSupported are one value), so
// errors.Is works whichever layer refused.
package errs

import "errors"

var (
	// ErrNotSupported: the operating system or machine cannot do this
	// (snapsafe needs Linux: memfd, SOCK_SEQPACKET, the vmgenid driver).
	ErrNotSupported = errors.New("not supported on this system")
	// ErrNoDevice: the device an event source needs is absent.
	ErrNoDevice = errors.New("device not present")

	// ErrNoProvider: no provider is running on the state directory.
	ErrNoProvider = errors.New("no snapsafe provider running")
	// ErrProviderRunning: another provider holds the state directory.
	ErrProviderRunning = errors.New("another provider is running on this state directory")
	// ErrUntrusted: a state directory, a file in it or the provider serving
	// it belongs to someone who could forge the generation or read the
	// wipe regions (another user, or anyone at all when group or others may
	// write it), or is a symbolic link.
	ErrUntrusted = errors.New("untrusted state directory")
	// ErrProviderGone: the connection to the provider was lost.
	ErrProviderGone = errors.New("connection to the snapsafe provider lost")
	// ErrRefused: the provider refused the connection (a bound on its
	// clients was reached); the error carries the provider's reason.
	ErrRefused = errors.New("the snapsafe provider refused the connection")
	// ErrNotPermitted: the request needs privilege the caller lacks.
	ErrNotPermitted = errors.New("not permitted")
	// ErrBadAck: an acknowledgement named a generation other than the
	// current one; it changed nothing.
	ErrBadAck = errors.New("acknowledged generation is not the current one")
	// ErrNotWatcher: an acknowledgement on a connection that is not a
	// watcher.
	ErrNotWatcher = errors.New("not a watcher")
	// ErrUnavailable: the provider has no such resource (no VMClock device).
	ErrUnavailable = errors.New("not available from this provider")
	// ErrInvalid: an argument is out of range; the request changed nothing.
	ErrInvalid = errors.New("invalid argument")
	// ErrLimit: a bound of the provider was exceeded.
	ErrLimit = errors.New("provider limit exceeded")
	// ErrNewGeneration: a newer generation arrived while waiting (or the
	// caller's own watcher is outdated). The caller must handle the new
	// generation and wait again.
	ErrNewGeneration = errors.New("a newer generation arrived while waiting")
)
