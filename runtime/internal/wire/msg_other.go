//go:build !unix

package wire

import (
	"net"
	"os"

	"github.com/snapsafe/snapsafe/internal/errs"
)

// OOBSpace is 0: this system cannot pass descriptors.
func OOBSpace(int) int { return 0 }

// Read is not supported on this system.
func Read(*net.UnixConn, []byte, []byte) (Message, *os.File, int, error) {
	return Message{}, nil, 0, errs.ErrNotSupported
}

// TakeFile is not supported on this system; it returns nil.
func TakeFile([]byte) *os.File { return nil }

// Rights is not supported on this system; it returns nil.
func Rights(*os.File) []byte { return nil }
