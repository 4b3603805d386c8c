package client

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/snapsafe/snapsafe/runtime/internal/wire"
	"github.com/snapsafe/snapsafe/shm"
)

// pageTimeout bounds Attach's wait for the provider to pass its page.
const pageTimeout = 5 * time.Second

// mapPage asks the provider for its page — a memfd sealed so that nobody
// can resize or write it — and maps it read-only. Unlike the page file in
// the state directory, which root or the provider's user can truncate
// under a reader's mapping (the reader then dies of SIGBUS), the memfd can
// never make the mapping fault.
func (c *ctlConn) mapPage() (*shm.Page, error) {
	ctx, cancel := context.WithTimeout(context.Background(), pageTimeout)
	defer cancel()
	r, err := c.call(ctx, wire.Page, nil)
	if err != nil {
		var re *RemoteError
		if errors.As(err, &re) && re.Code == wire.CodeUnknown {
			return nil, fmt.Errorf("the provider is older than this client and cannot pass its page: restart snapsafed from the same release: %w", err)
		}
		return nil, fmt.Errorf("asking for the generation page: %w", err)
	}
	if r.file == nil {
		return nil, errors.New("asking for the generation page: the provider sent no descriptor")
	}
	defer r.file.Close() // the mapping outlives the descriptor
	if size := r.m.U32(); size != shm.PageSize {
		return nil, fmt.Errorf("the provider's generation page has %d bytes, want %d", size, shm.PageSize)
	}
	return shm.MapPageMemfd(r.file)
}
