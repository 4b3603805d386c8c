package provider

import (
	"cmp"
	"fmt"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/snapsafe/snapsafe/shm"
)

// Default bounds on clients and wipe regions (Config, and snapsafed's flags).
// Every local user may connect, so every resource a connection holds is
// bounded per uid, and root and the provider's own user keep a reserve that
// other users can never take: no user can lock another one out, and none can
// lock root out.
const (
	// DefaultMaxClients bounds the connections of all users together.
	DefaultMaxClients = 16384
	// DefaultMaxClientsPerUID bounds the connections of one user (other
	// than root and the provider's own user).
	DefaultMaxClientsPerUID = 1024
	// DefaultReservedClients is the reserve of connections kept for root
	// and the provider's own user (a quarter of MaxClients when that is
	// less).
	DefaultReservedClients = 64
	// DefaultMaxRegionBytesPerUID bounds the wipe-region bytes of one user
	// (other than root and the provider's own user): a quarter of
	// shm.MaxRegionBytes, 4 MiB, 64 csprng processes' worth.
	DefaultMaxRegionBytesPerUID = shm.MaxRegionBytes / 4
)

// MaxRegionsPerConn bounds the wipe regions one connection may hold.
const MaxRegionsPerConn = 16

// writeTimeout bounds every reply to a peer; a peer that does not take one
// in time is disconnected. Generation events have no deadline: they are
// never queued behind an unread one (see notifier).
const writeTimeout = 2 * time.Second

// refusalWindow is how often, at most, the provider logs a summary of the
// clients it refused; within a window only each uid's first refusal gets a
// line of its own.
const refusalWindow = 10 * time.Second

// maxLoggedUIDs bounds the uids whose first refusal in a window is logged
// one by one; refusals of further uids only show in the summary.
const maxLoggedUIDs = 16

// unknownUID stands for a peer whose credentials could not be read.
const unknownUID = math.MaxUint32

// bounds are the provider's limits, resolved from Config.
type bounds struct {
	clients, clientsPerUID, reservedClients             int
	regionBytes, regionBytesPerUID, reservedRegionBytes int
	self                                                uint32 // the provider's own uid
}

// newBounds resolves cfg's bounds: zero fields take their defaults.
func newBounds(cfg Config) (bounds, error) {
	b := bounds{
		clients:           cmp.Or(cfg.MaxClients, DefaultMaxClients),
		clientsPerUID:     cmp.Or(cfg.MaxClientsPerUID, DefaultMaxClientsPerUID),
		regionBytes:       cmp.Or(cfg.MaxRegionBytes, shm.MaxRegionBytes),
		regionBytesPerUID: cmp.Or(cfg.MaxRegionBytesPerUID, DefaultMaxRegionBytesPerUID),
		self:              uint32(os.Geteuid()),
	}
	b.reservedClients = cfg.ReservedClients
	if b.reservedClients == 0 {
		b.reservedClients = min(DefaultReservedClients, b.clients/4)
	}
	// Root's and the provider's share of the region bytes: a quarter.
	b.reservedRegionBytes = b.regionBytes / 4
	switch {
	case b.clients < 1:
		return b, fmt.Errorf("%w: the bound on clients (--max-clients) is %d: it must be at least 1", ErrInvalid, b.clients)
	case b.clientsPerUID < 1:
		return b, fmt.Errorf("%w: the bound on clients per uid (--max-clients-per-uid) is %d: it must be at least 1", ErrInvalid, b.clientsPerUID)
	case b.reservedClients < 0 || b.reservedClients >= b.clients:
		return b, fmt.Errorf("%w: the reserve of clients (--reserved-clients) is %d: it must be at least 0 and less than --max-clients (%d)", ErrInvalid, b.reservedClients, b.clients)
	case b.regionBytes < 1 || b.regionBytes > shm.MaxRegionBytes:
		return b, fmt.Errorf("%w: the bound on wipe-region bytes is %d: it must be 1 to %d", ErrInvalid, b.regionBytes, shm.MaxRegionBytes)
	case b.regionBytesPerUID < 1:
		return b, fmt.Errorf("%w: the bound on wipe-region bytes per uid (--max-region-bytes-per-uid) is %d: it must be at least 1", ErrInvalid, b.regionBytesPerUID)
	}
	return b, nil
}

// usage is what one uid holds. Under Provider.mu.
type usage struct {
	conns       int
	regionBytes int
}

// ledger counts what the connected peers hold, per uid and in the shared
// pool (everyone but root and the provider's own user). Under Provider.mu.
type ledger struct {
	byUID             map[uint32]*usage
	sharedConns       int
	sharedRegionBytes int
}

func (l *ledger) of(uid uint32) *usage {
	if u := l.byUID[uid]; u != nil {
		return u
	}
	return &usage{}
}

func (l *ledger) addConn(c *peer) {
	if l.byUID == nil {
		l.byUID = make(map[uint32]*usage)
	}
	u := l.byUID[c.uid]
	if u == nil {
		u = &usage{}
		l.byUID[c.uid] = u
	}
	u.conns++
	if !c.reserved {
		l.sharedConns++
	}
}

// removeConn forgets c and every region it held.
func (l *ledger) removeConn(c *peer, regionBytes int) {
	u := l.byUID[c.uid]
	if u == nil {
		return
	}
	u.conns--
	u.regionBytes -= regionBytes
	if !c.reserved {
		l.sharedConns--
		l.sharedRegionBytes -= regionBytes
	}
	if u.conns <= 0 {
		delete(l.byUID, c.uid)
	}
}

func (l *ledger) addRegion(c *peer, n int) {
	if u := l.byUID[c.uid]; u != nil {
		u.regionBytes += n
	}
	if !c.reserved {
		l.sharedRegionBytes += n
	}
}

// mayReserve reports whether uid may use the reserve: root and the
// provider's own user. They are bounded by the global bounds alone.
func (b bounds) mayReserve(uid uint32) bool { return uid == 0 || uid == b.self }

// admitLocked decides whether a peer of uid may connect; the error is the
// refusal's text, which the peer receives.
func (p *Provider) admitLocked(uid uint32) error {
	b := p.bounds
	switch {
	case len(p.conns) >= b.clients:
		return fmt.Errorf("the provider serves its maximum of %d clients (snapsafed --max-clients): close some, try again later, or raise the bound", b.clients)
	case b.mayReserve(uid):
		return nil
	case p.ledger.of(uid).conns >= b.clientsPerUID:
		return fmt.Errorf("uid %d already holds its maximum of %d connections to the provider (snapsafed --max-clients-per-uid): close some, or ask the administrator to raise the bound", uid, b.clientsPerUID)
	case p.ledger.sharedConns >= b.clients-b.reservedClients:
		return fmt.Errorf("the %d connections open to users other than root and the provider's are all taken (snapsafed --max-clients %d less --reserved-clients %d): try again later, or ask the administrator to raise --max-clients", b.clients-b.reservedClients, b.clients, b.reservedClients)
	}
	return nil
}

// regionLimitLocked returns why c may not hold n more bytes of regions, or "".
func (p *Provider) regionLimitLocked(c *peer, n int) string {
	b := p.bounds
	switch {
	case len(c.regions) >= MaxRegionsPerConn:
		return fmt.Sprintf("wipe region refused: a connection may hold at most %d", MaxRegionsPerConn)
	case p.regionBytes+n > b.regionBytes:
		return fmt.Sprintf("wipe region refused: the provider holds its maximum of %d bytes of regions", b.regionBytes)
	case c.reserved:
		return ""
	case p.ledger.of(c.uid).regionBytes+n > b.regionBytesPerUID:
		return fmt.Sprintf("wipe region refused: uid %d holds %d bytes of regions, and one user may hold at most %d (snapsafed --max-region-bytes-per-uid): close some, or ask the administrator to raise the bound",
			c.uid, p.ledger.of(c.uid).regionBytes, b.regionBytesPerUID)
	case p.ledger.sharedRegionBytes+n > b.regionBytes-b.reservedRegionBytes:
		return fmt.Sprintf("wipe region refused: users other than root and the provider's hold their maximum of %d bytes of regions together: try again later", b.regionBytes-b.reservedRegionBytes)
	}
	return ""
}

// refusalLog rate-limits the log lines about refused clients: a uid's first
// refusal in a window gets a line of its own (for at most maxLoggedUIDs
// uids), the others are counted and summarised in one line when the window
// closes, refusalWindow after its first refusal. So a client that
// reconnects in a loop costs the log two lines per window, however fast it
// spins. Under Provider.mu.
type refusalLog struct {
	total  uint64         // refusals since the provider started (status)
	window map[uint32]int // refusals per uid in the open window
	other  int            // refusals of uids past maxLoggedUIDs in the window
	timer  *time.Timer    // closes the window; nil when none is open
	every  time.Duration  // the window's length: refusalWindow, or a test's
}

// noteRefusalLocked counts a refusal of uid and reports whether it gets a
// log line of its own.
func (p *Provider) noteRefusalLocked(uid uint32) bool {
	r := &p.refusals
	r.total++
	if r.window == nil {
		r.window = make(map[uint32]int)
	}
	if r.timer == nil && !p.closed {
		// The timer's goroutine counts in wg; shutdown, which sets closed
		// under mu before it waits, stops it or waits for it.
		p.wg.Add(1)
		r.timer = time.AfterFunc(cmp.Or(r.every, refusalWindow), func() {
			defer p.wg.Done()
			p.flushRefusals()
		})
	}
	n, seen := r.window[uid]
	switch {
	case seen:
		r.window[uid] = n + 1
		return false
	case len(r.window) < maxLoggedUIDs:
		r.window[uid] = 1
		return true
	}
	r.other++
	return false
}

// flushRefusals closes the refusal window, logging a summary of the
// refusals that had no line of their own.
func (p *Provider) flushRefusals() {
	p.mu.Lock()
	r := &p.refusals
	window, other, every := r.window, r.other, p.refusalEvery()
	r.window, r.other, r.timer = nil, 0, nil
	p.mu.Unlock()
	p.logRefusalSummary(window, other, every)
}

// stopRefusalsLocked ends the refusal window at shutdown; the caller logs
// the summary it returns with logRefusalSummary after unlocking.
func (p *Provider) stopRefusalsLocked() (window map[uint32]int, other int, ok bool) {
	r := &p.refusals
	if r.timer == nil || !r.timer.Stop() {
		return nil, 0, false // none open, or its timer is running: it logs
	}
	p.wg.Done()
	window, other = r.window, r.other
	r.window, r.other, r.timer = nil, 0, nil
	return window, other, true
}

func (p *Provider) logRefusalSummary(window map[uint32]int, other int, every time.Duration) {
	unlogged := other
	type count struct {
		uid uint32
		n   int
	}
	var counts []count
	for uid, n := range window {
		unlogged += n - 1 // the first one had a line of its own
		if n > 1 {
			counts = append(counts, count{uid, n - 1})
		}
	}
	if unlogged == 0 {
		return
	}
	slices.SortFunc(counts, func(a, b count) int { return cmp.Or(cmp.Compare(b.n, a.n), cmp.Compare(a.uid, b.uid)) })
	var by []string
	for _, c := range counts {
		uid := strconv.FormatUint(uint64(c.uid), 10)
		if c.uid == unknownUID {
			uid = "unknown"
		}
		by = append(by, uid+":"+strconv.Itoa(c.n))
	}
	if other > 0 {
		by = append(by, "others:"+strconv.Itoa(other))
	}
	p.log.Warn("refused more clients", "refusals", unlogged, "within", every.String(), "by_uid", strings.Join(by, ","))
}

// refusalEvery is the refusal log's window.
func (p *Provider) refusalEvery() time.Duration { return cmp.Or(p.refusals.every, refusalWindow) }
