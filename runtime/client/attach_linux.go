package client

import (
	"fmt"

	"github.com/snapsafe/snapsafe/runtime/internal/statedir"
	"github.com/snapsafe/snapsafe/shm"
)

// Attach maps the generation page of the provider on dir (DefaultDir() when
// empty) and connects to its control socket. It fails with an error
// matching ErrNoProvider when no provider runs there, and with one matching
// ErrUntrusted when the directory, its page or its socket belongs to
// neither root nor the caller, may be written by group or others, or is a
// symbolic link, or when the provider runs as neither root nor the
// directory's owner; and with one matching ErrRefused (carrying the
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
	if err := ctl.admitted(); err != nil {
		ctl.close()
		return nil, fmt.Errorf("attaching to %s: %w", dir, err)
	}
	// The page is mapped through a descriptor opened relative to the
	// checked directory, and checked itself, before it is mapped.
	f, err := sd.OpenPage()
	if err != nil {
		ctl.close()
		return nil, fmt.Errorf("attaching to %s: %w", dir, err)
	}
	defer f.Close() // the mapping outlives the descriptor
	page, err := shm.MapPageFile(f)
	if err != nil {
		ctl.close()
		return nil, fmt.Errorf("attaching to %s: %w", dir, err)
	}
	return &Client{dir: dir, page: page, ctl: ctl}, nil
}
