package client

import (
	"fmt"

	"github.com/snapsafe/snapsafe/runtime/internal/statedir"
)

// Attach connects to the control socket of the provider on dir
// (DefaultDir() when empty) and maps its generation page: the sealed memfd
// the provider passes over the socket, never the page file, which others
// may truncate, so the page file's owner and mode do not matter. It fails
// with an error matching ErrNoProvider when no provider runs there, with one
// matching ErrUntrusted when the directory or its socket belongs to neither
// root nor the caller, may be written by group or others, or is a symbolic
// link, or when the provider runs as neither root nor the directory's
// owner; and with one matching ErrRefused (carrying the
// provider's reason) when the provider refuses the connection because a
// bound on its clients was reached.
func Attach(dir string) (*Client, error) {
	if dir == "" {
		dir = DefaultDir()
	}
	sd, err := statedir.Open(dir)
	if err != nil {
		return nil, dialError(dir, err)
	}
	defer sd.Close()
	uc, err := sd.Dial()
	if err != nil {
		return nil, dialError(dir, err)
	}
	ctl := newCtlConn(uc, nil, nil)
	// The page request is also the first round trip: a refusal over the
	// bounds arrives as its answer (ErrRefused).
	page, err := ctl.mapPage()
	if err != nil {
		ctl.close()
		return nil, fmt.Errorf("attaching to %s: %w", dir, err)
	}
	return &Client{dir: dir, page: page, ctl: ctl}, nil
}
