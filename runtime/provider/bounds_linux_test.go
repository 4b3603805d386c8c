package provider

import (
	"bytes"
	"errors"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snapsafe/snapsafe/internal/eventually"
	"github.com/snapsafe/snapsafe/internal/testdevice"
	"github.com/snapsafe/snapsafe/runtime/client"
	"github.com/snapsafe/snapsafe/shm"
)

// logBuffer collects a provider's log lines for the test to read.
type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// lines returns the log lines that contain s.
func (l *logBuffer) lines(s string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	for _, line := range strings.Split(l.b.String(), "\n") {
		if strings.Contains(line, s) {
			out = append(out, line)
		}
	}
	return out
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// startBounded runs a provider with cfg on a state directory every user can
// reach, its log in the returned buffer and its refusal window set to
// window.
func startBounded(t *testing.T, cfg Config, window time.Duration) (*testProvider, *logBuffer) {
	t.Helper()
	dir, err := os.MkdirTemp("", "snapsafe-bounds-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	cfg.Dir = dir
	logs := withLog(t, &cfg)
	tp := startWith(t, cfg, func(p *Provider) { p.refusals.every = window })
	return tp, logs
}

// TestClientBoundsPerUID replays "any user locks root out": unprivileged
// users hold every connection they may, and one of them reconnects in a
// loop. Each is refused past its per-uid bound, all of them together past
// the shared pool, with a refusal the Go client reports as ErrRefused with
// the provider's reason (not as a lost provider); root still gets status,
// bump, watch and wait from the reserve; the provider logs one line per
// refused uid, however often it was refused, and counts every refusal.
func TestClientBoundsPerUID(t *testing.T) {
	testdevice.RequireRoot(t, "to run hostile clients as other uids")
	const perUID, global, reserve = 8, 32, 4
	// A window longer than the test: every refusal after a uid's first is
	// only counted, and summarised once, at shutdown.
	tp, logs := startBounded(t, Config{MaxClients: global, MaxClientsPerUID: perUID, ReservedClients: reserve}, time.Hour)
	dir := tp.Dir()

	// One user: refused past its own bound, and refused every time after.
	const spin = 300
	a := startHog(t, 65534, dir, "conns", 100, spin)
	if l := a.line(t, "conns"); !strings.HasPrefix(l, "conns 8 refused=true limit=true gone=false ") ||
		!strings.Contains(l, "refused the connection: uid 65534 already holds its maximum of 8 connections") || !strings.Contains(l, "--max-clients-per-uid") {
		t.Fatalf("the hog's refusal: %q; want 8 connections, then ErrRefused (not ErrProviderGone) with the provider's reason", l)
	}
	if l := a.line(t, "spin"); l != "spin 300 of 300 refused" {
		t.Fatalf("reconnecting in a loop: %q, want every attempt refused with ErrRefused", l)
	}

	// More users: together they may hold global-reserve connections.
	startHog(t, 65533, dir, "conns", perUID, 0)
	startHog(t, 65532, dir, "conns", perUID, 0)
	d := startHog(t, 65531, dir, "conns", perUID, 0)
	if l := d.line(t, "conns"); !strings.HasPrefix(l, "conns 4 refused=true ") || !strings.Contains(l, "users other than root and the provider's are all taken") {
		t.Fatalf("the fourth user's refusal: %q; want 4 connections (the shared pool is %d), then ErrRefused naming it", l, global-reserve)
	}

	// Root is served from the reserve: status, bump, watch, ack, wait.
	c := attach(t, dir)
	s := status(t, c)
	if s.Clients != global-reserve+1 || s.Refused != 1+spin+1 {
		t.Fatalf("status: clients %d, refused %d; want %d and %d", s.Clients, s.Refused, global-reserve+1, 1+spin+1)
	}
	w := watch(t, c)
	gen, err := c.Bump(ctxT(t, 5*time.Second), 0)
	if err != nil {
		t.Fatalf("root's bump with every shared slot taken: %v", err)
	}
	if g, err := w.Next(ctxT(t, 5*time.Second)); err != nil || g != gen {
		t.Fatalf("root's watcher: Next = %d, %v; want %d", g, err, gen)
	}
	if err := w.Ack(ctxT(t, 5*time.Second), gen); err != nil {
		t.Fatal(err)
	}
	if err := c.Wait(ctxT(t, 5*time.Second)); err != nil {
		t.Fatalf("root's wait with every shared slot taken: %v", err)
	}
	// A user's connections come back when it closes them.
	a.stop()
	eventually.True(t, "the first user's connections to be released", func() bool { return status(t, c).Clients == global-reserve-perUID+2 })
	if l := startHog(t, 65534, dir, "conns", 1, 0).lines; len(l) != 0 {
		t.Fatalf("a user under its bounds was refused: %q", l)
	}

	// The log: one line for each refused uid, the rest summarised at
	// shutdown in one line that counts them.
	if got := logs.lines("refusing a client"); len(got) != 2 {
		t.Fatalf("%d refusal lines, want 2 (one per refused uid):\n%s", len(got), strings.Join(got, "\n"))
	}
	tp.stop()
	if got := logs.lines("refused more clients"); len(got) != 1 || !strings.Contains(got[0], "refusals=300 ") || !strings.Contains(got[0], "by_uid=65534:300") {
		t.Fatalf("summary lines at shutdown: %q; want one counting the 300 further refusals of uid 65534", got)
	}
}

// TestRegionBoundsPerUID: wipe-region bytes are bounded per uid, and users
// together leave a quarter of the provider's region bytes to root.
func TestRegionBoundsPerUID(t *testing.T) {
	testdevice.RequireRoot(t, "to run hostile clients as other uids")
	const perUID, global = 8 * shm.MaxRegionSize, 32 * shm.MaxRegionSize // 512 KiB, 2 MiB
	tp, _ := startBounded(t, Config{MaxRegionBytes: global, MaxRegionBytesPerUID: perUID}, time.Hour)
	dir := tp.Dir()
	a := startHog(t, 65534, dir, "regions", 100, 0)
	if l := a.line(t, "regions"); !strings.HasPrefix(l, "regions 8 refused=false limit=true ") || !strings.Contains(l, "--max-region-bytes-per-uid") {
		t.Fatalf("the hog's regions: %q; want 8 regions of 64 KiB, then ErrLimit naming the per-uid bound", l)
	}
	startHog(t, 65533, dir, "regions", 8, 0)
	startHog(t, 65532, dir, "regions", 8, 0)
	d := startHog(t, 65531, dir, "regions", 8, 0)
	if l := d.line(t, "regions"); !strings.HasPrefix(l, "regions 0 refused=false limit=true ") || !strings.Contains(l, "users other than root and the provider's hold their maximum") {
		t.Fatalf("the fourth user's regions: %q; want none (three quarters of %d bytes are taken), and ErrLimit naming the shared bound", l, global)
	}
	// Root still gets regions, up to the global bound.
	c := attach(t, dir)
	for i := range global / 4 / shm.MaxRegionSize {
		if i > 0 && i%MaxRegionsPerConn == 0 {
			c = attach(t, dir)
		}
		r, err := c.Region(ctxT(t, 5*time.Second), shm.MaxRegionSize)
		if err != nil {
			t.Fatalf("root's region %d with the users' share taken: %v", i, err)
		}
		defer r.Close()
	}
	if _, err := c.Region(ctxT(t, 5*time.Second), shm.MaxRegionSize); !errors.Is(err, client.ErrLimit) {
		t.Fatalf("a region past the global bound: %v, want ErrLimit", err)
	}
	if s := status(t, c); s.RegionBytes != global {
		t.Fatalf("status region_bytes %d, want %d", s.RegionBytes, global)
	}
}

// TestRefusalLogWindow: the refusal log is bounded by time, not by how fast
// clients are refused. A refused uid gets a line of its own once per
// window; the window's other refusals are summarised in one line when it
// closes.
func TestRefusalLogWindow(t *testing.T) {
	const window = time.Second // far longer than 50 refusals take
	tp, logs := startBounded(t, Config{MaxClients: 2, ReservedClients: 1}, window)
	dir := tp.Dir()
	attach(t, dir)
	attach(t, dir) // both slots taken: root too is refused now
	refuse := func(n int) {
		for range n {
			if _, err := client.Attach(dir); !errors.Is(err, client.ErrRefused) || !strings.Contains(err.Error(), "maximum of 2 clients") {
				t.Fatalf("attaching past the global bound: %v, want ErrRefused naming it", err)
			}
		}
	}
	refuse(50)
	eventually.True(t, "the window's summary", func() bool { return len(logs.lines("refused more clients")) == 1 })
	refuse(1) // a new window: a line of its own
	eventually.True(t, "the second window's line", func() bool { return len(logs.lines("refusing a client")) == 2 })
	if got := logs.lines("refused more clients"); !strings.Contains(got[0], "refusals=49 ") {
		t.Fatalf("summary %q, want the 49 refusals after the first", got[0])
	}
	tp.stop()
	if n := len(logs.lines("refus")); n != 3 {
		t.Fatalf("%d refusal lines for 51 refusals in two windows, want 3:\n%s", n, logs)
	}
}

// TestBoundsConfig: zero fields take the defaults; bounds that cannot work
// are refused with ErrInvalid naming the flag.
func TestBoundsConfig(t *testing.T) {
	b, err := newBounds(Config{})
	if err != nil {
		t.Fatal(err)
	}
	want := bounds{clients: DefaultMaxClients, clientsPerUID: DefaultMaxClientsPerUID, reservedClients: DefaultReservedClients,
		regionBytes: shm.MaxRegionBytes, regionBytesPerUID: DefaultMaxRegionBytesPerUID, reservedRegionBytes: shm.MaxRegionBytes / 4, self: uint32(os.Geteuid())}
	if b != want {
		t.Fatalf("default bounds %+v, want %+v", b, want)
	}
	if b, _ := newBounds(Config{MaxClients: 8}); b.reservedClients != 2 {
		t.Fatalf("reserve with 8 clients = %d, want a quarter (2)", b.reservedClients)
	}
	for _, tc := range []struct {
		cfg  Config
		flag string
	}{
		{Config{MaxClients: -1}, "--max-clients"},
		{Config{MaxClientsPerUID: -1}, "--max-clients-per-uid"},
		{Config{MaxClients: 8, ReservedClients: 8}, "--reserved-clients"},
		{Config{ReservedClients: -1}, "--reserved-clients"},
		{Config{MaxRegionBytes: shm.MaxRegionBytes + 1}, "wipe-region bytes"},
		{Config{MaxRegionBytesPerUID: -1}, "--max-region-bytes-per-uid"},
	} {
		if _, err := newBounds(tc.cfg); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.flag) {
			t.Errorf("newBounds(%+v) = %v, want ErrInvalid naming %s", tc.cfg, err, tc.flag)
		}
	}
	if _, err := New(Config{Dir: t.TempDir(), MaxClients: -1, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("New with a bad bound: %v, want ErrInvalid", err)
	}
}
