package provider

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

func peerCred(conn syscall.Conn) (*unix.Ucred, error) {
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

// Privilege to force a bump. CAP_CHECKPOINT_RESTORE is the capability
// Linux gives checkpoint/restore tools, the natural holders of this right.
const capCheckpointRestore = 40

// readProc reads the peer's /proc/<pid>/status. A pid can name another
// process once the peer has exited, so the peer's pidfd (held from before
// the read) is checked after it: if the process it names is still there,
// the status read was its own; if not, readProc fails.
func readProc(conn syscall.Conn, pid int32) (procInfo, error) {
	pidfd := peerPidfd(conn, pid)
	if pidfd >= 0 {
		defer unix.Close(pidfd)
	}
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return procInfo{}, err
	}
	if pidfd >= 0 && errors.Is(unix.PidfdSendSignal(pidfd, 0, nil, 0), unix.ESRCH) {
		return procInfo{}, fmt.Errorf("peer %d exited before its status was read", pid)
	}
	return parseProcStatus(string(st)), nil
}

// mayBump decides whether a peer may force bumps: root, the provider's own
// user, a holder of CAP_CHECKPOINT_RESTORE, or a member of the bump group.
// Capabilities and supplementary groups are read (readProc) when the peer
// is admitted.
func (p *Provider) mayBump(conn syscall.Conn, cred *unix.Ucred) bool {
	if cred.Uid == 0 || cred.Uid == uint32(os.Geteuid()) {
		return true
	}
	if p.bumpGID >= 0 && cred.Gid == uint32(p.bumpGID) {
		return true
	}
	info, err := readProc(conn, cred.Pid)
	if err != nil {
		return false
	}
	return info.capEff&(1<<capCheckpointRestore) != 0 || inGroup(p.bumpGID, cred.Gid, info.groups)
}

// soPeerPidfd is SO_PEERPIDFD (Linux 6.5+): a pidfd for the process that
// connected, recorded by the kernel at connect time. x/sys does not name it
// yet; 77 is its value on every architecture Go runs Linux on.
const soPeerPidfd = 77

// peerPidfd returns a pidfd for the peer: the kernel's, from the time of
// connect (SO_PEERPIDFD), else one opened now by pid (Linux 5.3+), else -1.
func peerPidfd(conn syscall.Conn, pid int32) int {
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
