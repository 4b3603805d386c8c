package provider

import (
	"github.com/snapsafe/snapsafe/internal/errs"
	"github.com/snapsafe/snapsafe/runtime/internal/statedir"
)

// Errors returned (wrapped) by the provider. Match them with errors.Is.
var (
	// ErrNotSupported: the provider needs Linux (SOCK_SEQPACKET, memfd).
	ErrNotSupported = errs.ErrNotSupported
	// ErrProviderRunning: another provider holds the state directory.
	ErrProviderRunning = errs.ErrProviderRunning
	// ErrInvalid: an argument is out of range (a forced bump's floor).
	ErrInvalid = errs.ErrInvalid
	// ErrUntrusted: the state directory, or a file in it, is not the
	// provider's own (or root's), may be written by group or others, or is
	// a symbolic link; the provider refuses to use it.
	ErrUntrusted = errs.ErrUntrusted
)

// DefaultDir returns the state directory a provider uses when none is
// given: $SNAPSAFE_DIR; else /run/snapsafe for root; else
// $XDG_RUNTIME_DIR/snapsafe; else a per-user directory in the temporary
// directory.
func DefaultDir() string { return statedir.DefaultDir() }
