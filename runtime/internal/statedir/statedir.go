// Package statedir names the files of a snapsafe state directory and finds
// the directory a provider serves or a client attaches to.
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
func ClientDir() string {
	if d := os.Getenv("SNAPSAFE_DIR"); d != "" {
		return d
	}
	if os.Geteuid() != 0 {
		if d := userDir(); exists(filepath.Join(d, SocketFile)) {
			return d
		}
	}
	return SystemDir
}

func exists(path string) bool {
	_, err := os.Lstat(path)
	return err == nil
}
