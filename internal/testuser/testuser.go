//go:build linux

// Package testuser gives tests what they need to play another local user:
// the credentials of uid 65534, a directory like /tmp that every user may
// write, and a copy of the test binary every user may run. Tests that use
// it need root (see internal/testdevice.RequireRoot).
package testuser

import (
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// Nobody is uid and gid 65534, the hostile user of the tests.
var Nobody = &syscall.Credential{Uid: 65534, Gid: 65534}

// SharedTmp makes a directory like /tmp (root's, mode 01777) under a
// directory every user can reach, removed at the end of the test.
func SharedTmp(t testing.TB) string {
	t.Helper()
	base, err := os.MkdirTemp("", "snapsafe-shared-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(base, "tmp")
	if err := os.Mkdir(tmp, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Chmod(tmp, 0o1777); err != nil { // os.Chmod drops the sticky bit of a plain mode
		t.Fatal(err)
	}
	return tmp
}

// Executable copies the running test binary into a directory every user
// may enter (go test's own build directory is private to its user) and
// returns the copy's path, removed at the end of the test.
func Executable(t testing.TB) string {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	dir, err := os.MkdirTemp("", "snapsafe-testbin-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	src, err := os.Open(self)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	exe := filepath.Join(dir, filepath.Base(self))
	dst, err := os.OpenFile(exe, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		dst.Close()
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	return exe
}
