package client

import (
	"fmt"
	"path/filepath"

	"github.com/snapsafe/snapsafe/runtime/internal/statedir"
	"github.com/snapsafe/snapsafe/shm"
)

// Attach maps the generation page of the provider on dir (DefaultDir() when
// empty) and connects to its control socket. It fails with an error
// matching ErrNoProvider when no provider runs there, and with one matching
// ErrRefused (carrying the provider's reason) when the provider refuses the
// connection because a bound on its clients was reached.
func Attach(dir string) (*Client, error) {
	if dir == "" {
		dir = DefaultDir()
	}
	ctl, err := dialCtl(dir, nil, nil)
	if err != nil {
		return nil, err
	}
	if err := ctl.admitted(); err != nil {
		ctl.close()
		return nil, fmt.Errorf("attaching to %s: %w", dir, err)
	}
	page, err := shm.MapPage(filepath.Join(dir, statedir.PageFile))
	if err != nil {
		ctl.close()
		return nil, fmt.Errorf("attaching to %s: %w", dir, err)
	}
	return &Client{dir: dir, page: page, ctl: ctl}, nil
}
