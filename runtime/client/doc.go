// Package client is what applications import to use a snapsafe provider:
// attaching to its state directory, the one-load generation probe,
// consistent snapshots of the page, watchers and their acknowledgements
// (re-attaching by themselves when the provider restarts, unless
// NoReconnect), the orchestrator wait, forced bumps, wipe-on-restore
// regions, the VMClock device, and values rebuilt once per generation:
// Cached for any value, CachedSecret for key material kept in a
// wipe-on-restore region.
//
// A provider (package runtime/provider, run by snapsafed) owns a state
// directory holding the generation page ("generation"), the control socket
// ("control.sock") and a lock file. Attach connects to the socket and maps,
// read-only, the page the provider passes over it: a memfd sealed so that
// nobody can truncate or write it, unlike the file, which root or the
// provider's user can. Client.Generation is one atomic load from the page;
// everything else goes over the socket (docs/ABI.md).
package client

import (
	"github.com/snapsafe/snapsafe/runtime/api"
	"github.com/snapsafe/snapsafe/runtime/internal/statedir"
)

// Status is the provider's state and counters (snapsafectl status --json).
type Status = api.Status

// SystemDir is the state directory of a provider run by root.
const SystemDir = statedir.SystemDir

// DefaultDir returns the state directory a client attaches to when none is
// given: $SNAPSAFE_DIR; else, for a non-root user who runs a provider of
// their own, that user's directory; else SystemDir, where a system-wide
// provider serves every user. The user's directory counts only if it is
// the user's own and no one else may write it (see Attach).
func DefaultDir() string { return statedir.ClientDir() }
