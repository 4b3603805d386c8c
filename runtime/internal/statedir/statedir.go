// Package statedir names the files of a snapsafe state directory, finds
// the directory a provider serves or a client attaches to, and opens it
// only when it may be trusted: the one place where both sides check who
// owns the directory, its files and the provider serving it.
//
// The trust rule (docs/ABI.md, section 1): a directory, and every file in
// it, must belong to root or to the caller's own user, must not be
// writable by group or others, and is never reached through a symbolic
// link; a client talks only to a provider whose peer uid is root or the
// directory's owner. Anything else could let another local user forge the
// generation, or read the wipe regions its provider hands out and so
// predict the client's random numbers.
package statedir

import (
	"fmt"
	"os"
	"path/filepath"
)

// File names inside a state directory.
const (
	PageFile   = "generation"
	SocketFile = "control.sock"
	LockFile   = "lock"
	// HighWaterFile is the provider's private record (mode 0600) of the
	// last generation it published in this boot.
	HighWaterFile = "highwater"
	// WatchersFile is the provider's private record (mode 0600) of its
	// tracked watchers, which the next provider expects back.
	WatchersFile = "watchers"
)

// SystemDir is the state directory of a provider run by root.
const SystemDir = "/run/snapsafe"

// DefaultDir returns the state directory a provider uses when none is
// given: $SNAPSAFE_DIR; else SystemDir for root; else
// $XDG_RUNTIME_DIR/snapsafe; else a per-user directory in the temporary
// directory.
func DefaultDir() string {
	if d := os.Getenv("SNAPSAFE_DIR"); d != "" {
		return d
	}
	if os.Geteuid() == 0 {
		return SystemDir
	}
	return userDir()
}

func userDir() string {
	if x := os.Getenv("XDG_RUNTIME_DIR"); x != "" {
		return filepath.Join(x, "snapsafe")
	}
	return filepath.Join(os.TempDir(), fmt.Sprintf("snapsafe-%d", os.Geteuid()))
}

// ClientDir returns the state directory a client attaches to when none is
// given: $SNAPSAFE_DIR; else, for a non-root user who runs a provider of
// their own, that user's directory; else SystemDir, where a system-wide
// provider serves every user.
//
// The user's directory counts only when it passes the trust checks: a
// directory another user planted under its name in a shared temporary
// directory is passed over for SystemDir, so it can neither capture the
// client nor keep it from the system-wide provider.
func ClientDir() string {
	if d := os.Getenv("SNAPSAFE_DIR"); d != "" {
		return d
	}
	if os.Geteuid() != 0 {
		if d := userDir(); Trusted(d) == nil && exists(filepath.Join(d, SocketFile)) {
			return d
		}
	}
	return SystemDir
}

// Dir is an open state directory that passed the trust checks (Open,
// Create). Every file in it is opened relative to the directory's
// descriptor, never by path, so that renaming or replacing the path after
// the check cannot redirect what is opened. Close releases it.
type Dir struct {
	path  string
	fd    int
	owner uint32
}

// Path returns the directory's path, as cleaned by Open.
func (d *Dir) Path() string { return d.path }

// Owner returns the uid that owns the directory: root or the caller.
func (d *Dir) Owner() uint32 { return d.owner }

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
