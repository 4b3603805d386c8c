package provider

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/snapsafe/snapsafe/backend"
	"github.com/snapsafe/snapsafe/runtime/internal/statedir"
	"github.com/snapsafe/snapsafe/shm"
	"golang.org/x/sys/unix"
)

// New prepares a provider on cfg.Dir: it takes the directory's lock, opens
// (or creates) the generation page and listens on the control socket. Call
// Run to start it and Close to release everything.
func New(cfg Config) (*Provider, error) {
	p := &Provider{
		dir:      cfg.Dir,
		log:      cfg.Logger,
		source:   cfg.Source,
		bumpGID:  -1,
		trackGID: -1,
		started:  time.Now(),
		ready:    make(chan struct{}),
		conns:    make(map[*peer]struct{}),
	}
	if p.dir == "" {
		p.dir = DefaultDir()
	}
	var err error
	if p.bounds, err = newBounds(cfg); err != nil {
		return nil, err
	}
	if p.hooks, err = newHookSet(cfg); err != nil { // hooks.go
		return nil, err
	}
	if p.log == nil {
		p.log = slog.Default()
	}
	if p.source == nil {
		p.source = backend.Manual()
	}
	if cfg.BumpGroup != "" {
		g, err := user.LookupGroup(cfg.BumpGroup)
		if err != nil {
			return nil, fmt.Errorf("bump group: %w", err)
		}
		if p.bumpGID, err = strconv.Atoi(g.Gid); err != nil {
			return nil, fmt.Errorf("bump group %s has gid %q: %w", cfg.BumpGroup, g.Gid, err)
		}
	}
	if cfg.TrackGroup != "" {
		var err error
		if p.trackGID, err = lookupGID(cfg.TrackGroup, "--track-group"); err != nil {
			return nil, err
		}
	}
	b, ok := shm.ParseBackend(p.source.Name())
	if !ok {
		return nil, fmt.Errorf("unknown backend %q", p.source.Name())
	}
	p.backend = b
	// 0755: any local user may reach the page and the socket.
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating state directory: %w", err)
	}
	if p.lock, err = lockDir(p.dir); err != nil {
		return nil, err
	}
	if p.page, err = shm.OpenWriter(filepath.Join(p.dir, statedir.PageFile)); err != nil {
		p.lock.Close()
		return nil, err
	}
	if p.ln, err = listen(filepath.Join(p.dir, statedir.SocketFile)); err != nil {
		p.page.Close()
		p.lock.Close()
		return nil, err
	}
	return p, nil
}

// lockDir takes the state directory's lock so that two providers never share
// it. The kernel drops the lock when the process dies, so a crashed provider
// never leaves a stale lock behind.
func lockDir(dir string) (*os.File, error) {
	path := filepath.Join(dir, statedir.LockFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW, 0o644)
	if err != nil {
		return nil, fmt.Errorf("opening lock file: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			pid, _ := os.ReadFile(path)
			return nil, fmt.Errorf("%w: %s (pid %s); stop it or use another --dir", ErrProviderRunning, dir, strings.TrimSpace(string(pid)))
		}
		return nil, fmt.Errorf("locking %s: %w", path, err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// listen creates the control socket, connectable by any local user.
func listen(path string) (*net.UnixListener, error) {
	// We hold the directory lock, so a socket file left here is stale.
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("removing stale control socket: %w", err)
	}
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("listening on control socket: %w", err)
	}
	if err := os.Chmod(path, 0o666); err != nil {
		ln.Close()
		return nil, fmt.Errorf("setting control socket mode: %w", err)
	}
	return ln, nil
}
