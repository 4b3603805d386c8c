package client

import (
	"fmt"
)

// Attach connects to the control socket of the provider on dir
// (DefaultDir() when empty) and maps its generation page: the sealed memfd
// the provider passes over the socket, never the page file, which others
// may truncate. It fails with an error matching ErrNoProvider when no
// provider runs there.
func Attach(dir string) (*Client, error) {
	if dir == "" {
		dir = DefaultDir()
	}
	ctl, err := dialCtl(dir, nil, nil)
	if err != nil {
		return nil, err
	}
	page, err := ctl.mapPage()
	if err != nil {
		ctl.close()
		return nil, fmt.Errorf("attaching to %s: %w", dir, err)
	}
	return &Client{dir: dir, page: page, ctl: ctl}, nil
}
