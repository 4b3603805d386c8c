package provider

import (
	"os"

	"golang.org/x/sys/unix"
)

// checkFDLimit warns when the descriptor limit is below what the bounds let
// clients make the provider hold: one per connection and one per wipe
// region (at least a page each). Past it, accept fails with EMFILE for
// everyone, root included, before any per-uid bound applies.
func (p *Provider) checkFDLimit() {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		return
	}
	need := uint64(p.bounds.clients + p.bounds.regionBytes/os.Getpagesize() + 64)
	if lim.Cur < need {
		p.log.Warn("the descriptor limit is below what the bounds on clients allow: lower --max-clients or raise the limit (LimitNOFILE=)",
			"limit", lim.Cur, "needed", need, "max_clients", p.bounds.clients)
	}
}
