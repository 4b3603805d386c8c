package provider

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/snapsafe/snapsafe/shm"
	"golang.org/x/sys/unix"
)

// How a hook is run (docs/hooks.md).
const (
	// hookPath is what a hook is executed as: descriptor 3 of the child,
	// the hook file the provider opened and checked (see execHook).
	hookPath = "/proc/self/fd/3"
	// hookEnvPath is the PATH of a hook's environment, which holds nothing
	// of the provider's own.
	hookEnvPath = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"
	// maxHookLine bounds one logged line of a hook's output; a longer line
	// is logged in pieces of this size.
	maxHookLine = 4096
	// maxHookLines bounds the lines of one stream of one run that are
	// logged; the rest are counted, and their number logged.
	maxHookLines = 1000
	// hookOutputGrace is how long the output of a hook is still read once
	// its process group is gone: a process it detached (setsid) may hold
	// the pipes open.
	hookOutputGrace = time.Second
)

// startHooks scans the hooks directory once, logging what it refuses
// (nothing runs for the start-up generation), and starts the hook runner.
// It returns the function that stops the runner: it kills a running
// hook's process group and returns once the runner has ended. Run calls
// both, before it serves clients and when it shuts down.
func (p *Provider) startHooks() (stop func()) {
	h := p.hooks
	if h == nil {
		return func() {}
	}
	d, dirRefused := openHookDir(h.dir)
	var scan []scannedHook
	if d != nil {
		scan = listHooks(d)
		d.Close()
	}
	p.mu.Lock()
	gen := p.gen.Load()
	p.installHooksLocked(scan, dirRefused, gen, true)
	p.mu.Unlock()
	runnable := p.logScan(scan, dirRefused)
	p.log.Info("restore hooks", "dir", h.dir, "hooks", runnable, "timeout", h.timeout,
		"note", "hooks run on every new generation after the start-up one")

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go p.runHooks(ctx, gen, done)
	return func() {
		cancel()
		<-done
	}
}

// logScan logs what a scan refused and returns how many hooks it found
// runnable.
func (p *Provider) logScan(scan []scannedHook, dirRefused string) int {
	if dirRefused != "" {
		p.log.Warn("restore hooks directory refused: no hook runs", "dir", p.hooks.dir, "why", dirRefused)
	}
	n := 0
	for _, s := range scan {
		if s.refused != "" {
			p.log.Warn("restore hook refused: it never runs", "hook", s.name, "dir", p.hooks.dir, "why", s.refused)
		} else {
			n++
		}
	}
	return n
}

// passResult is how one pass over the hooks for a generation ended.
type passResult int

const (
	passDone    passResult = iota // every hook ran (or was skipped)
	passStale                     // a newer generation arrived: start over
	passStopped                   // the provider is stopping
)

// runHooks is the hook runner, started by startHooks and stopped by
// cancelling ctx; it closes done when it ends. For each new generation it
// rescans the directory and runs the hooks one at a time. When a newer
// generation arrives meanwhile, the running hook may finish (or is killed
// at its timeout), and the runner starts over from the first hook for the
// newest generation. handled is the start-up generation.
func (p *Provider) runHooks(ctx context.Context, handled uint64, done chan<- struct{}) {
	defer close(done)
	for {
		select {
		case <-ctx.Done():
			return
		case <-p.hooks.wake:
		}
		for {
			p.mu.Lock()
			gen, reason := p.hookGenLocked()
			p.mu.Unlock()
			if gen <= handled {
				break // a wake-up for a generation already handled
			}
			switch p.hookPass(ctx, gen, reason) {
			case passStopped:
				return
			case passDone:
				handled = gen
			}
		}
	}
}

// hookPass scans the hooks directory for gen and runs every runnable hook
// for it, in lexical order.
func (p *Provider) hookPass(ctx context.Context, gen uint64, reason shm.Reason) passResult {
	h := p.hooks
	d, dirRefused := openHookDir(h.dir)
	var scan []scannedHook
	if d != nil {
		defer d.Close()
		scan = listHooks(d)
	}
	p.mu.Lock()
	if g, _ := p.hookGenLocked(); g != gen {
		p.mu.Unlock()
		return passStale
	}
	p.installHooksLocked(scan, dirRefused, gen, false)
	p.mu.Unlock()
	p.logScan(scan, dirRefused)

	for _, s := range scan {
		if s.refused != "" {
			continue
		}
		if ctx.Err() != nil {
			return passStopped
		}
		// Checked again, on the descriptor that is run: the file may have
		// changed since the scan.
		f, refused, err := openHook(d, s.name)
		p.mu.Lock()
		stale := h.gen != gen
		switch {
		case stale:
		case err != nil || f == nil && refused == "":
			// Vanished, or no hook any more (no longer executable).
			p.dropHookLocked(s.name)
		case refused != "":
			p.refuseHookLocked(s.name, refused)
		default:
			p.startHookLocked(s.name, gen)
		}
		p.mu.Unlock()
		if refused != "" && !stale {
			p.log.Warn("restore hook refused: it never runs", "hook", s.name, "dir", h.dir, "why", refused)
		}
		if f == nil {
			if stale {
				return passStale
			}
			continue
		}
		if stale {
			f.Close()
			return passStale
		}
		ok, why := p.execHook(ctx, f, s.name, gen, reason)
		f.Close()
		p.mu.Lock()
		p.endHookLocked(s.name, gen, ok, why)
		p.mu.Unlock()
		if ctx.Err() != nil {
			return passStopped
		}
	}
	return passDone
}

// openHookDir opens the hooks directory, never through a symbolic link,
// and checks it: root or the provider's user owns it, and neither group
// nor others may write it. It returns the open directory, or nil and why
// it was refused (or could not be opened).
func openHookDir(path string) (*os.File, string) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ELOOP) || errors.Is(err, unix.ENOTDIR) {
			if fi, lerr := os.Lstat(path); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 {
				return nil, "a symbolic link: name the real directory"
			}
			return nil, "not a directory"
		}
		return nil, "cannot open it: " + errnoText(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, "cannot stat it: " + errnoText(err)
	}
	if why := untrusted(&st, false); why != "" {
		unix.Close(fd)
		return nil, why
	}
	return os.NewFile(uintptr(fd), path), ""
}

// listHooks scans the open hooks directory d: every regular executable
// file, in lexical (byte) order, refused or not. Names that begin with a
// dot, directories and files that nobody may execute are not hooks.
func listHooks(d *os.File) []scannedHook {
	// Readdirnames reads from the descriptor's offset: start at the top.
	if _, err := d.Seek(0, 0); err != nil {
		return nil
	}
	names, _ := d.Readdirnames(-1)
	slices.Sort(names)
	var scan []scannedHook
	for _, name := range names {
		if strings.HasPrefix(name, ".") {
			continue
		}
		f, refused, err := openHook(d, name)
		if err != nil {
			continue // vanished since the directory was read
		}
		if f != nil {
			f.Close()
		} else if refused == "" {
			continue // not a hook
		}
		scan = append(scan, scannedHook{name: name, refused: refused})
	}
	return scan
}

// openHook opens the hook name in the directory d with O_PATH, not
// following a symbolic link, and checks what it opened: a regular file
// someone may execute, owned by root or the provider's user, writable by
// neither group nor others, neither setuid nor setgid. It returns the open
// hook; or nil and why it is refused; or nil, "" and nil when name is no
// hook (a directory, or not executable); or an error when it is gone.
// O_PATH opens nothing for reading: no FIFO blocks, no device is touched.
func openHook(d *os.File, name string) (*os.File, string, error) {
	fd, err := unix.Openat(int(d.Fd()), name, unix.O_PATH|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.ENOENT) {
			return nil, "", err
		}
		return nil, "cannot open it: " + errnoText(err), nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, "cannot stat it: " + errnoText(err), nil
	}
	why := ""
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		if st.Mode&0o111 == 0 {
			unix.Close(fd)
			return nil, "", nil
		}
		why = untrusted(&st, true)
	case unix.S_IFDIR:
		unix.Close(fd)
		return nil, "", nil
	case unix.S_IFLNK:
		why = "a symbolic link: hooks are run only from regular files in the directory (copy the file instead)"
	default:
		why = "not a regular file"
	}
	if why != "" {
		unix.Close(fd)
		return nil, why, nil
	}
	return os.NewFile(uintptr(fd), name), "", nil
}

// untrusted says why a hook (hook true) or the hooks directory with
// status st may not be trusted, or "" when it may: root or the provider's
// user must own it, neither group nor others may write it (with a POSIX
// ACL, the group bits are the ACL's mask, so a write grant to anyone else
// shows there), and a hook may be neither setuid nor setgid.
func untrusted(st *unix.Stat_t, hook bool) string {
	euid := uint32(os.Geteuid())
	mode := st.Mode & 0o7777
	switch {
	case st.Uid != 0 && st.Uid != euid:
		return fmt.Sprintf("owned by uid %d: only root and the provider's user (uid %d) may own it (chown root)", st.Uid, euid)
	case mode&0o022 != 0:
		return fmt.Sprintf("writable by group or others (mode %04o): chmod go-w", mode)
	case hook && mode&(unix.S_ISUID|unix.S_ISGID) != 0:
		return fmt.Sprintf("setuid or setgid (mode %04o): hooks run as the provider's user; chmod ug-s", mode)
	}
	return ""
}

// errnoText is err's errno text ("permission denied"), or err itself.
func errnoText(err error) string {
	var errno unix.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	return err.Error()
}

// execHook runs the checked, open hook f (called name) for gen and reports
// whether it exited 0, or how it failed.
//
// The child gets f as its descriptor 3 (ExtraFiles clears close-on-exec
// for it, in the child only) and is executed as /proc/self/fd/3, which in
// the child is that descriptor: so the file checked is the file run, even
// if the path is replaced meanwhile. A #! script works too: the kernel
// hands its interpreter /proc/self/fd/3, still open. The hook gets a
// minimal environment (hookEnvPath and the SNAPSAFE_ variables), stdin
// /dev/null, / as its working directory and a process group of its own.
// Its output is logged line by line. At the timeout, or when the provider
// stops, the whole group is killed; once the hook has exited, so is
// whatever it left running in its group.
func (p *Provider) execHook(ctx context.Context, f *os.File, name string, gen uint64, reason shm.Reason) (bool, string) {
	outR, outW, err := os.Pipe()
	if err != nil {
		return false, "could not start it: " + err.Error()
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return false, "could not start it: " + err.Error()
	}
	cmd := &exec.Cmd{
		Path: hookPath,
		Args: []string{name},
		Env: []string{
			hookEnvPath,
			"SNAPSAFE_GENERATION=" + strconv.FormatUint(gen, 10),
			"SNAPSAFE_REASON=" + reason.String(),
			"SNAPSAFE_HOOK=" + name,
			"SNAPSAFE_DIR=" + p.dir,
		},
		Dir:         "/",
		Stdout:      outW,
		Stderr:      errW,
		ExtraFiles:  []*os.File{f},
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	start := time.Now()
	err = cmd.Start()
	outW.Close()
	errW.Close()
	if err != nil {
		outR.Close()
		errR.Close()
		why := "could not start it: " + errnoText(err)
		p.log.Warn("restore hook failed", "hook", name, "generation", gen, "why", why)
		return false, why
	}
	var lines sync.WaitGroup
	lines.Add(2)
	go p.logHookOutput(&lines, outR, name, "stdout", gen)
	go p.logHookOutput(&lines, errR, name, "stderr", gen)

	pid := cmd.Process.Pid
	exited := make(chan struct{})
	go func() {
		defer close(exited)
		waitExited(pid)
	}()
	timer := time.NewTimer(p.hooks.timeout)
	defer timer.Stop()
	why := ""
	select {
	case <-exited:
	case <-timer.C:
		why = fmt.Sprintf("timed out after %v: its process group was killed", p.hooks.timeout)
	case <-ctx.Done():
		why = "killed with its process group: the provider is stopping"
	}
	// The hook is not reaped yet (waitExited leaves it a zombie), so its
	// pid still names its process group and no other: whatever is left of
	// the group is killed without any risk of hitting an unrelated one.
	_ = unix.Kill(-pid, unix.SIGKILL)
	<-exited
	werr := cmd.Wait()
	deadline := time.Now().Add(hookOutputGrace)
	_ = outR.SetReadDeadline(deadline)
	_ = errR.SetReadDeadline(deadline)
	lines.Wait()
	outR.Close()
	errR.Close()

	took := time.Since(start).Round(time.Millisecond)
	if why == "" && werr != nil {
		why = werr.Error()
	}
	if why != "" {
		p.log.Warn("restore hook failed", "hook", name, "generation", gen, "why", why, "took", took)
		return false, why
	}
	p.log.Info("restore hook done", "hook", name, "generation", gen, "took", took)
	return true, ""
}

// waitExited returns once the process pid has exited, without reaping it.
func waitExited(pid int) {
	var info unix.Siginfo
	for {
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, unix.EINTR) {
			return
		}
	}
}

// logHookOutput logs what the hook name writes to one stream, a line per
// record, until EOF or the read deadline, at most maxHookLines lines.
func (p *Provider) logHookOutput(wg *sync.WaitGroup, r *os.File, name, stream string, gen uint64) {
	defer wg.Done()
	br := bufio.NewReaderSize(r, maxHookLine)
	n := 0
	for {
		line, err := br.ReadSlice('\n')
		if len(line) > 0 {
			if n < maxHookLines {
				line = bytes.TrimRight(line, "\r\n")
				p.log.Info("restore hook output", "hook", name, "stream", stream, "generation", gen, "line", string(line))
			}
			n++
		}
		if err != nil && !errors.Is(err, bufio.ErrBufferFull) {
			break
		}
	}
	if n > maxHookLines {
		p.log.Warn("restore hook output not logged", "hook", name, "stream", stream, "generation", gen,
			"lines", n-maxHookLines, "note", fmt.Sprintf("at most %d lines per stream and run are logged", maxHookLines))
	}
}
