package provider

import (
	"errors"
	"fmt"
	"log/slog"
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
		dir:       cfg.Dir,
		log:       cfg.Logger,
		source:    cfg.Source,
		bumpGID:   -1,
		trackGID:  -1,
		changed:   make(chan struct{}),
		bumpsBy:   make(map[shm.Reason]uint64),
		onAdapted: cfg.OnAdapted,
		started:   time.Now(),
		ready:     make(chan struct{}),
		conns:     make(map[*peer]struct{}),
		exp:       newExpectation(cfg.RestartGrace),
		waiters:   make(map[*peer]struct{}),
		events:    newNotifier(),
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
	// The directory is opened once and checked (it must be ours or root's,
	// and nobody else may write it); the lock, the page and the socket are
	// then made relative to that descriptor, never through a symbolic link.
	sd, err := statedir.Create(p.dir)
	if err != nil {
		return nil, err
	}
	if p.lock, err = lockDir(sd); err != nil {
		sd.Close()
		return nil, err
	}
	if p.page, err = openPage(sd); err != nil {
		p.lock.Close()
		sd.Close()
		return nil, spaceHint(err)
	}
	if p.hw, err = openHighWater(p.dir); err != nil {
		p.page.Close()
		p.lock.Close()
		sd.Close()
		return nil, spaceHint(err)
	}
	if p.ln, err = sd.Listen(); err != nil {
		p.hw.Close()
		p.page.Close()
		p.lock.Close()
		sd.Close()
		return nil, err
	}
	p.state = sd
	return p, nil
}

// openPage makes the sealed page memfd and keeps the page file in the
// checked directory as its copy (shm.OpenWriter opens the file relative to
// the directory, never through a symbolic link).
func openPage(sd *statedir.Dir) (*shm.Writer, error) {
	return shm.OpenWriter(filepath.Join(sd.Path(), statedir.PageFile))
}

// lockDir takes the state directory's lock so that two providers never share
// it. The kernel drops the lock when the process dies, so a crashed provider
// never leaves a stale lock behind.
func lockDir(sd *statedir.Dir) (*os.File, error) {
	f, err := sd.OpenLock()
	if err != nil {
		return nil, fmt.Errorf("opening lock file: %w", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		defer f.Close()
		if errors.Is(err, unix.EWOULDBLOCK) {
			pid := make([]byte, 32)
			n, _ := f.ReadAt(pid, 0)
			return nil, fmt.Errorf("%w: %s (pid %s); stop it or use another --dir", ErrProviderRunning, sd.Path(), strings.TrimSpace(string(pid[:n])))
		}
		return nil, fmt.Errorf("locking %s: %w", f.Name(), err)
	}
	if err := f.Truncate(0); err == nil {
		_, _ = f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// closeListener stops accepting clients and removes the control socket,
// through the state directory's descriptor (never by a path that someone
// may since have pointed elsewhere).
func (p *Provider) closeListener() {
	if p.ln == nil {
		return
	}
	p.ln.Close()
	if err := p.state.RemoveSocket(); err != nil {
		p.log.Warn("removing the control socket", "err", err)
	}
}
