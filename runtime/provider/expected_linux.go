package provider

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/snapsafe/snapsafe/runtime/internal/statedir"
	"golang.org/x/sys/unix"
)

func (p *Provider) readWatchersFile() ([]byte, error) {
	return p.state.ReadPrivate(statedir.WatchersFile)
}

func (p *Provider) writeWatchersFile(b []byte) error {
	return p.state.ReplacePrivate(statedir.WatchersFile, b)
}

// procStat returns the start time of process pid (field 22 of
// /proc/<pid>/stat, clock ticks after boot) and whether it has exited (a
// zombie, not yet reaped).
func procStat(pid int32) (start uint64, zombie bool, err error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, false, err
	}
	// The command name, in parentheses, may hold spaces and parentheses:
	// the fields that follow start after the last ')'.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, false, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (the state), so field 22 is f[19].
	if len(f) < 20 {
		return 0, false, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	start, err = strconv.ParseUint(f[19], 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("/proc/%d/stat: start time %q: %w", pid, f[19], err)
	}
	return start, f[0] == "Z" || f[0] == "X", nil
}

// peerStart returns the start time of the peer's process, or 0 when it
// cannot be read. The peer's pidfd, held across the read, makes sure the
// time read is the peer's and not that of a process that took its pid.
func peerStart(conn syscall.Conn, pid int32) uint64 {
	pidfd := peerPidfd(conn, pid)
	if pidfd >= 0 {
		defer unix.Close(pidfd)
	}
	start, _, err := procStat(pid)
	if err != nil || pidfd >= 0 && errors.Is(unix.PidfdSendSignal(pidfd, 0, nil, 0), unix.ESRCH) {
		return 0
	}
	return start
}

// sameProcess reports whether pid still names the process that started at
// start, and returns a pidfd for it (-1 where pidfds are not available).
// The pidfd is opened before the start time is read, so that when the two
// agree it is the process's own.
func sameProcess(pid int32, start uint64) (int, bool) {
	if pid <= 0 {
		return -1, false
	}
	pidfd, err := unix.PidfdOpen(int(pid), 0)
	if errors.Is(err, unix.ESRCH) {
		return -1, false
	}
	if err != nil {
		pidfd = -1 // no pidfds here: exited checks /proc
	}
	got, zombie, err := procStat(pid)
	if err != nil || zombie || got != start || pidfd >= 0 && exited(pidfd, pid, start) {
		closePidfd(pidfd)
		return -1, false
	}
	return pidfd, true
}

// exited reports whether the process has exited: its pidfd turns readable
// then; without one, /proc shows it gone, a zombie, or another process.
func exited(pidfd int, pid int32, start uint64) bool {
	if pidfd >= 0 {
		fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, 0)
		return err == nil && n == 1
	}
	got, zombie, err := procStat(pid)
	return err != nil || zombie || got != start
}

func closePidfd(fd int) {
	if fd >= 0 {
		unix.Close(fd)
	}
}
