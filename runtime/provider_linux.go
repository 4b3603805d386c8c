package runtime

import (
	"encoding/json"
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
	"github.com/snapsafe/snapsafe/shm"
	"golang.org/x/sys/unix"
)

// New prepares a provider on cfg.Dir: it takes the directory's lock, opens
// (or creates) the generation page and listens on the control socket. Call
// Run to start it and Close to release everything.
func New(cfg Config) (*Provider, error) {
	p := &Provider{
		dir:     cfg.Dir,
		log:     cfg.Logger,
		source:  cfg.Source,
		bumpGID: -1,
		started: time.Now(),
		ready:   make(chan struct{}),
		conns:   make(map[*peer]struct{}),
	}
	if p.dir == "" {
		p.dir = DefaultDir()
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
	b, ok := shm.ParseBackend(p.source.Name())
	if !ok {
		return nil, fmt.Errorf("unknown backend %q", p.source.Name())
	}
	p.backend = b
	// 0755: any local user may reach the page and the socket.
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		return nil, fmt.Errorf("creating state directory: %w", err)
	}
	var err error
	if p.lock, err = lockDir(p.dir); err != nil {
		return nil, err
	}
	if p.page, err = shm.OpenWriter(filepath.Join(p.dir, PageFile)); err != nil {
		p.lock.Close()
		return nil, err
	}
	if p.ln, err = listen(filepath.Join(p.dir, SocketFile)); err != nil {
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
	path := filepath.Join(dir, LockFile)
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

// dupFile duplicates f's descriptor (close-on-exec).
func dupFile(f *os.File) (*os.File, error) {
	fd, err := unix.FcntlInt(f.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(fd), f.Name()), nil
}

func monotonic() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return time.Duration(ts.Nano())
}

// accept serves connections until the listener is closed.
func (p *Provider) accept() error {
	for {
		conn, err := p.ln.AcceptUnix()
		if err != nil {
			p.mu.Lock()
			closed := p.closed
			p.mu.Unlock()
			if closed {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, unix.EMFILE) || errors.Is(err, unix.ENFILE) {
				// Out of descriptors: back off rather than spin or die.
				p.log.Warn("accepting a client", "err", err)
				time.Sleep(100 * time.Millisecond)
				continue
			}
			return fmt.Errorf("accepting clients: %w", err)
		}
		c, err := p.admit(conn)
		if err != nil {
			p.log.Warn("refusing a client", "err", err)
			_, _ = conn.Write(encodeError(0, codeLimit, err.Error()))
			conn.Close()
			continue
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

// admit reads the peer's credentials and registers it.
func (p *Provider) admit(conn *net.UnixConn) (*peer, error) {
	cred, err := peerCred(conn)
	if err != nil {
		return nil, err
	}
	c := &peer{
		conn:   conn,
		uid:    cred.Uid,
		pid:    cred.Pid,
		mayBmp: p.mayBump(conn, cred),
		notify: make(chan struct{}, 1),
		done:   make(chan struct{}),
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, errors.New("provider is shutting down")
	}
	if len(p.conns) >= MaxConns {
		return nil, fmt.Errorf("too many clients (at most %d)", MaxConns)
	}
	p.conns[c] = struct{}{}
	return c, nil
}

func peerCred(conn *net.UnixConn) (*unix.Ucred, error) {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	if cerr != nil {
		return nil, fmt.Errorf("reading peer credentials: %w", cerr)
	}
	return cred, nil
}

// serve reads and handles c's requests until it goes away or misbehaves.
func (p *Provider) serve(c *peer) {
	defer p.wg.Done()
	defer p.drop(c)
	buf := make([]byte, MaxMessage)
	oob := make([]byte, unix.CmsgSpace(4*16))
	for {
		n, oobn, flags, _, err := c.conn.ReadMsgUnix(buf, oob)
		if err != nil || n == 0 {
			return // EOF, or the connection was closed by drop
		}
		if oobn > 0 {
			// Clients never send descriptors; close any we were given.
			closeRights(oob[:oobn])
		}
		if flags&unix.MSG_TRUNC != 0 {
			p.refuse(c, 0, codeMalformed, fmt.Sprintf("message longer than %d bytes", MaxMessage))
			return
		}
		m, err := decode(buf[:n])
		if err != nil {
			code := codeMalformed
			if n >= headerSize && buf[0] != WireVersion {
				code = codeVersion
			} else if _, known := payloadSize[m.typ]; n >= headerSize && !known {
				code = codeUnknown
			}
			p.refuse(c, m.id, code, err.Error())
			return
		}
		if !p.handle(c, m) {
			return
		}
	}
}

// refuse answers a protocol violation; the caller then closes the connection.
func (p *Provider) refuse(c *peer, id uint32, code errCode, text string) {
	p.log.Warn("closing a misbehaving client", "pid", c.pid, "uid", c.uid, "err", text)
	p.send(c, encodeError(id, code, text), nil)
}

// handle answers one request; false closes the connection.
func (p *Provider) handle(c *peer, m message) bool {
	reply := func(t msgType, payload []byte) bool { return p.send(c, encode(t, m.id, payload), nil) }
	fail := func(code errCode, text string) bool { return p.send(c, encodeError(m.id, code, text), nil) }
	switch m.typ {
	case msgStatus:
		b, err := json.Marshal(p.Status())
		if err != nil {
			return fail(codeInternal, "encoding status: "+err.Error())
		}
		return reply(msgStatusOK, b)
	case msgWatch:
		return reply(msgWatchOK, u64(p.watch(c)))
	case msgAck:
		if code, text := p.ack(c, m.u64()); code != 0 {
			return fail(code, text)
		}
		return reply(msgAckOK, m.payload)
	case msgWait:
		if code, text := p.wait(c, m.id, m.u64()); code != 0 {
			return fail(code, text)
		}
		return true // the reply comes when the wait ends
	case msgCancel:
		p.cancelWait(c)
		return true
	case msgBump:
		if !c.mayBmp {
			p.log.Warn("bump refused", "pid", c.pid, "uid", c.uid)
			return fail(codeNotPermitted, "forcing a bump needs root, the provider's user, CAP_CHECKPOINT_RESTORE or membership of the provider's --bump-group")
		}
		gen, err := p.Bump(shm.ReasonForced, m.u64())
		if err != nil {
			return fail(codeInternal, err.Error())
		}
		p.log.Info("forced bump", "generation", gen, "min", m.u64(), "pid", c.pid, "uid", c.uid)
		return reply(msgBumpOK, u64(gen))
	case msgRegion:
		f, code, text := p.newRegion(c, m.u32())
		if code != 0 {
			return fail(code, text)
		}
		defer f.Close()
		fi, err := f.Stat()
		if err != nil {
			return fail(codeInternal, "wipe region: "+err.Error())
		}
		return p.send(c, encode(msgRegionOK, m.id, u32(uint32(fi.Size()))), unix.UnixRights(int(f.Fd())))
	case msgVMClock:
		f := backend.DeviceFile(p.source)
		if f == nil {
			return fail(codeUnavailable, fmt.Sprintf("the provider's %s backend has no VMClock device to pass", p.source.Name()))
		}
		return p.send(c, encode(msgVMClockOK, m.id, nil), unix.UnixRights(int(f.Fd())))
	}
	// A reply or event type sent to the provider.
	p.refuse(c, m.id, codeUnknown, fmt.Sprintf("message type %#x is not a request", uint8(m.typ)))
	return false
}

// closeRights closes every descriptor carried in a control message.
func closeRights(oob []byte) {
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return
	}
	for _, m := range msgs {
		fds, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue
		}
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
}

// Privilege to force a bump. CAP_CHECKPOINT_RESTORE is the capability
// Linux gives checkpoint/restore tools, the natural holders of this right.
const capCheckpointRestore = 40

// mayBump decides whether a peer may force bumps: root, the provider's own
// user, a holder of CAP_CHECKPOINT_RESTORE, or a member of the bump group.
// Capabilities and supplementary groups are read from /proc/<pid>/status
// when the peer is admitted. A pid can name another process once the peer
// has exited, so the peer's pidfd is checked after the read: if the
// process it names is still there, the status read was its own.
func (p *Provider) mayBump(conn *net.UnixConn, cred *unix.Ucred) bool {
	if cred.Uid == 0 || cred.Uid == uint32(os.Geteuid()) {
		return true
	}
	if p.bumpGID >= 0 && cred.Gid == uint32(p.bumpGID) {
		return true
	}
	pidfd := peerPidfd(conn, cred.Pid)
	if pidfd >= 0 {
		defer unix.Close(pidfd)
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cred.Pid))
	if err != nil {
		return false
	}
	if pidfd >= 0 && errors.Is(unix.PidfdSendSignal(pidfd, 0, nil, 0), unix.ESRCH) {
		return false // the peer is gone: the status may have been another process's
	}
	capEff, groups := parseProcStatus(string(st))
	if capEff&(1<<capCheckpointRestore) != 0 {
		return true
	}
	for _, g := range groups {
		if p.bumpGID >= 0 && g == uint32(p.bumpGID) {
			return true
		}
	}
	return false
}

// soPeerPidfd is SO_PEERPIDFD (Linux 6.5+): a pidfd for the process that
// connected, recorded by the kernel at connect time. x/sys does not name it
// yet; 77 is its value on every architecture Go runs Linux on.
const soPeerPidfd = 77

// peerPidfd returns a pidfd for the peer: the kernel's, from the time of
// connect (SO_PEERPIDFD), else one opened now by pid (Linux 5.3+), else -1.
func peerPidfd(conn *net.UnixConn, pid int32) int {
	fd := -1
	if rc, err := conn.SyscallConn(); err == nil {
		_ = rc.Control(func(s uintptr) {
			if v, err := unix.GetsockoptInt(int(s), unix.SOL_SOCKET, soPeerPidfd); err == nil {
				fd = v
			}
		})
	}
	if fd < 0 {
		if v, err := unix.PidfdOpen(int(pid), 0); err == nil {
			fd = v
		}
	}
	return fd
}

// parseProcStatus extracts the effective capabilities and the supplementary
// groups from the text of /proc/<pid>/status.
func parseProcStatus(s string) (capEff uint64, groups []uint32) {
	for _, line := range strings.Split(s, "\n") {
		key, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		val = strings.TrimSpace(val)
		switch key {
		case "CapEff":
			capEff, _ = strconv.ParseUint(val, 16, 64)
		case "Groups":
			for _, f := range strings.Fields(val) {
				if g, err := strconv.ParseUint(f, 10, 32); err == nil {
					groups = append(groups, uint32(g))
				}
			}
		}
	}
	return capEff, groups
}
