package statedir

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"

	"github.com/snapsafe/snapsafe/internal/errs"
	"golang.org/x/sys/unix"
)

// ErrUntrusted is the error every trust check wraps.
var ErrUntrusted = errs.ErrUntrusted

// Create opens the state directory a provider serves, first creating it if
// it is missing: its parents as needed, the directory itself with mode 0755
// so that every local user can reach the page and the socket. Then it
// checks the directory like Open: a directory that already existed, made
// by someone else or open to writes by others, is refused, never adopted.
func Create(path string) (*Dir, error) {
	if path == "" {
		return nil, errors.New("no state directory given: pass --dir or set SNAPSAFE_DIR")
	}
	path = filepath.Clean(path)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("creating the parent of state directory %s: %w", path, err)
	}
	// Mkdir, unlike MkdirAll, never follows a symbolic link at path: an
	// existing one is left alone (EEXIST) for Open to refuse.
	err := unix.Mkdir(path, 0o755)
	if err != nil && !errors.Is(err, unix.EEXIST) {
		return nil, fmt.Errorf("creating state directory %s: %w", path, err)
	}
	created := err == nil
	// Opened for reading, not O_PATH as for a client: Fchmod below needs
	// a real descriptor, and the provider can read its own directory.
	d, err := open(path, unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	// A directory made here gets 0755 whatever the umask, through the
	// descriptor just checked, so that other users can reach it.
	if created {
		if err := unix.Fchmod(d.fd, 0o755); err != nil {
			d.Close()
			return nil, fmt.Errorf("setting the mode of state directory %s: %w", path, err)
		}
	}
	return d, nil
}

// Open opens the state directory at path and checks that it may be trusted:
// it is a directory and not a symbolic link, root or the caller's
// effective user owns it, and neither group nor others may write it (with
// a POSIX ACL, the group bits are the ACL's mask, so a write grant to
// anyone else shows up there too). Anything else fails with an error
// wrapping ErrUntrusted that names the path, the owner and the mode; a
// missing directory fails with an error matching fs.ErrNotExist.
//
// The path is cleaned first: a trailing slash would make the kernel follow
// a symbolic link at the last component despite O_NOFOLLOW. Symbolic links
// in the components above it are followed; what is opened is the directory
// they lead to, checked as above, and later opens go through its
// descriptor.
//
// The descriptor is O_PATH: a client needs only search permission on the
// directory (a root provider's directory may be 0711), which is what
// openat and fstatat through it check.
func Open(path string) (*Dir, error) { return open(path, unix.O_PATH) }

func open(path string, how int) (*Dir, error) {
	path = filepath.Clean(path)
	fd, err := unix.Open(path, how|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		if isSymlink(path) {
			return nil, fmt.Errorf("%w: %s is a symbolic link; snapsafe follows none: use the directory it points to, if you trust it, or remove the link", ErrUntrusted, path)
		}
		return nil, fmt.Errorf("opening state directory %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("checking state directory %s: %w", path, err)
	}
	mode := st.Mode & 0o7777
	switch {
	case st.Mode&unix.S_IFMT != unix.S_IFDIR:
		// O_DIRECTORY makes this impossible; checked all the same, since
		// O_PATH|O_NOFOLLOW alone would open a symbolic link itself.
		unix.Close(fd)
		return nil, fmt.Errorf("%w: %s is not a directory (mode %#o)", ErrUntrusted, path, st.Mode)
	case !trustedUID(st.Uid):
		unix.Close(fd)
		return nil, fmt.Errorf("%w: %s is owned by uid %d (mode %04o), but snapsafe uses only a directory owned by %s: have it removed, or use another --dir / SNAPSAFE_DIR",
			ErrUntrusted, path, st.Uid, mode, trustedOwners())
	case mode&0o022 != 0:
		unix.Close(fd)
		return nil, fmt.Errorf("%w: %s (owner uid %d) has mode %04o, and other users could plant files in it: run chmod go-w %s, or use another --dir / SNAPSAFE_DIR",
			ErrUntrusted, path, st.Uid, mode, path)
	}
	return &Dir{path: path, fd: fd, owner: st.Uid}, nil
}

// Trusted reports, as Open's error, whether path is a state directory that
// may be trusted; nil when it is.
func Trusted(path string) error {
	d, err := Open(path)
	if err != nil {
		return err
	}
	return d.Close()
}

// Close releases the directory's descriptor. It is idempotent.
func (d *Dir) Close() error {
	if d == nil || d.fd < 0 {
		return nil
	}
	err := unix.Close(d.fd)
	d.fd = -1
	return err
}

// trustedUID reports whether a file owned by uid may be trusted: root's,
// or the caller's own.
func trustedUID(uid uint32) bool { return uid == 0 || uid == uint32(os.Geteuid()) }

// trustedOwners names the owners trustedUID accepts, for messages.
func trustedOwners() string {
	if euid := os.Geteuid(); euid != 0 {
		return fmt.Sprintf("root or by uid %d (you)", euid)
	}
	return "root"
}

func isSymlink(path string) bool {
	var st unix.Stat_t
	return unix.Lstat(path, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFLNK
}

// name returns the path of the file name in d, for messages and for the
// two system calls that take no directory descriptor (bind, connect).
func (d *Dir) name(name string) string { return filepath.Join(d.path, name) }

// lstat stats the file name in d without following a symbolic link.
func (d *Dir) lstat(name string) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Fstatat(d.fd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	return st, err
}

// openAt opens the file name in d: never through a symbolic link
// (O_NOFOLLOW), and without blocking on a FIFO planted under the name
// (O_NONBLOCK, cleared again once the file is known to be regular). The
// file must be a regular file with one link that neither group nor others
// may write, owned by the provider's user.
func (d *Dir) openAt(name string, flags int, perm uint32) (*os.File, error) {
	path := d.name(name)
	fd, err := unix.Openat(d.fd, name, flags|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, perm)
	if err != nil {
		if errors.Is(err, unix.ELOOP) {
			return nil, fmt.Errorf("%w: %s is a symbolic link; snapsafe follows none in its state directory: remove it", ErrUntrusted, path)
		}
		return nil, fmt.Errorf("opening %s: %w", path, err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("checking %s: %w", path, err)
	}
	var bad error
	switch mode := st.Mode & 0o7777; {
	case st.Mode&unix.S_IFMT != unix.S_IFREG:
		bad = fmt.Errorf("%w: %s is not a regular file (mode %#o): remove it", ErrUntrusted, path, st.Mode)
	case st.Nlink != 1:
		bad = fmt.Errorf("%w: %s has %d hard links, so writing it would change another file too: remove it", ErrUntrusted, path, st.Nlink)
	case st.Uid != uint32(os.Geteuid()):
		bad = fmt.Errorf("%w: %s is owned by uid %d, not by uid %d (this provider's user): remove it", ErrUntrusted, path, st.Uid, os.Geteuid())
	case mode&0o022 != 0:
		// Even once its mode is fixed, a descriptor or a mapping someone
		// opened for writing meanwhile would still write it.
		bad = fmt.Errorf("%w: %s has mode %04o, so other users may hold it open for writing: remove it and restart snapsafed", ErrUntrusted, path, mode)
	}
	if bad == nil {
		if err := unix.SetNonblock(fd, false); err != nil {
			bad = fmt.Errorf("opening %s: %w", path, err)
		}
	}
	if bad != nil {
		unix.Close(fd)
		return nil, bad
	}
	return os.NewFile(uintptr(fd), path), nil
}

// OpenLock opens (creating it, mode 0600) the provider's lock file, for
// reading and writing. Nobody else may open it: flock needs no write
// permission, so a lock file others could read would let any user hold a
// shared lock on it and keep every later provider from starting. A lock file
// an earlier version left at 0644 is made 0600 through the descriptor.
func (d *Dir) OpenLock() (*os.File, error) {
	f, err := d.openAt(LockFile, unix.O_RDWR|unix.O_CREAT, 0o600)
	if err != nil {
		return nil, err
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return nil, fmt.Errorf("making the lock file private: %w", err)
	}
	return f, nil
}

// maxPrivate bounds what ReadPrivate reads.
const maxPrivate = 16 << 20

// ReadPrivate reads the provider's private file name (such as WatchersFile)
// in d: a regular file with one link, owned by the provider's user, that
// neither group nor others may write. A missing file fails with an error
// matching fs.ErrNotExist.
func (d *Dir) ReadPrivate(name string) ([]byte, error) {
	f, err := d.openAt(name, unix.O_RDONLY, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxPrivate+1))
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", d.name(name), err)
	}
	if len(b) > maxPrivate {
		return nil, fmt.Errorf("%s is larger than %d bytes: remove it", d.name(name), maxPrivate)
	}
	return b, nil
}

// ReplacePrivate replaces the provider's private file name in d with data,
// atomically: readers see the old file or the new one, never a part. It
// writes name.new (mode 0600, created afresh) and renames it over name,
// both relative to the directory's descriptor, never through a symbolic
// link. The data is not synced: it lives no longer than the processes it
// describes, which a crash of the machine ends too.
func (d *Dir) ReplacePrivate(name string, data []byte) error {
	tmp := name + ".new"
	if err := unix.Unlinkat(d.fd, tmp, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("removing %s: %w", d.name(tmp), err)
	}
	f, err := d.openAt(tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = unix.Renameat(d.fd, tmp, d.fd, name)
	}
	if err != nil {
		_ = unix.Unlinkat(d.fd, tmp, 0)
		return fmt.Errorf("writing %s: %w", d.name(name), err)
	}
	return nil
}

// Listen creates the control socket, connectable by any local user, and
// listens on it. The listener does not remove the socket when closed:
// RemoveSocket does that, through the directory's descriptor.
func (d *Dir) Listen() (*net.UnixListener, error) {
	path := d.name(SocketFile)
	// The caller holds the directory lock, so a socket file left here is
	// stale. unlinkat never follows a symbolic link.
	if err := unix.Unlinkat(d.fd, SocketFile, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return nil, fmt.Errorf("removing stale control socket %s: %w", path, err)
	}
	// bind(2) takes a path and has no *at form, so the socket is bound by
	// path. That is safe here. The directory passed Open: it is ours (or
	// root's) and nobody else may write it, so nobody else can put a
	// symbolic link or anything else at control.sock, and bind never
	// follows one at the last component anyway (it fails with EADDRINUSE
	// on any existing name). Only someone who may write a parent of the
	// directory could swap the directory itself between Open and bind, and
	// then the socket would land in a directory of their choosing; the
	// check below catches that, since only the directory's owner or root
	// can have made control.sock in it after the unlink above.
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("listening on control socket %s: %w", path, err)
	}
	// Go would unlink by path on Close, through whatever the path names
	// by then.
	ln.SetUnlinkOnClose(false)
	st, err := d.lstat(SocketFile)
	if err != nil || st.Mode&unix.S_IFMT != unix.S_IFSOCK {
		ln.Close()
		return nil, fmt.Errorf("%w: the control socket bound at %s is not in the state directory opened there: was the directory moved? Use a directory whose parents only root can write", ErrUntrusted, path)
	}
	// fchmodat2 with AT_SYMLINK_NOFOLLOW (Linux 6.6+) never follows a
	// symbolic link; older kernels have only fchmodat, which would, but
	// the name was a socket a moment ago and only the directory's owner
	// or root could have replaced it.
	err = unix.Fchmodat(d.fd, SocketFile, 0o666, unix.AT_SYMLINK_NOFOLLOW)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENOSYS) {
		err = unix.Fchmodat(d.fd, SocketFile, 0o666, 0)
	}
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("setting the mode of control socket %s: %w", path, err)
	}
	return ln, nil
}

// RemoveSocket removes the control socket, for a provider that stops.
func (d *Dir) RemoveSocket() error {
	if err := unix.Unlinkat(d.fd, SocketFile, 0); err != nil && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("removing control socket %s: %w", d.name(SocketFile), err)
	}
	return nil
}

// Dial connects to the control socket of the provider on d, for a client.
// The socket must be a socket owned by root or the caller, and the process
// that listens on it (SO_PEERCRED, checked right after the connect) must
// run as root or as the directory's owner. connect(2) takes a path: if
// someone swapped the directory after Open, the peer check still refuses
// any provider but root's or the owner's. A missing socket, or one nobody
// listens on, fails with an error matching fs.ErrNotExist or
// syscall.ECONNREFUSED.
func (d *Dir) Dial() (*net.UnixConn, error) {
	path := d.name(SocketFile)
	st, err := d.lstat(SocketFile)
	switch {
	case err != nil:
		return nil, fmt.Errorf("connecting to %s: %w", path, err)
	case st.Mode&unix.S_IFMT == unix.S_IFLNK:
		return nil, fmt.Errorf("%w: %s is a symbolic link; snapsafe follows none in its state directory: remove it", ErrUntrusted, path)
	case st.Mode&unix.S_IFMT != unix.S_IFSOCK:
		return nil, fmt.Errorf("%w: %s is not a socket (mode %#o): remove it and restart snapsafed", ErrUntrusted, path, st.Mode)
	case !trustedUID(st.Uid):
		return nil, fmt.Errorf("%w: %s is owned by uid %d, not by %s: have it removed, or use another --dir / SNAPSAFE_DIR", ErrUntrusted, path, st.Uid, trustedOwners())
	}
	uc, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("connecting to %s: %w", path, err)
	}
	uid, err := peerUID(uc)
	if err != nil {
		uc.Close()
		return nil, fmt.Errorf("connecting to %s: %w", path, err)
	}
	if uid != 0 && uid != d.owner {
		uc.Close()
		return nil, fmt.Errorf("%w: the provider on %s runs as uid %d, neither root nor the directory's owner (uid %d): stop it, or use another --dir / SNAPSAFE_DIR", ErrUntrusted, path, uid, d.owner)
	}
	return uc, nil
}

// Dial opens the state directory at path (Open) and connects to its
// provider (Dir.Dial).
func Dial(path string) (*net.UnixConn, error) {
	d, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Dial()
}

// peerUID returns the uid of the process at the other end of uc, as the
// kernel recorded it when that process called listen(2).
func peerUID(uc *net.UnixConn) (uint32, error) {
	rc, err := uc.SyscallConn()
	if err != nil {
		return 0, err
	}
	var cred *unix.Ucred
	var cerr error
	if err := rc.Control(func(fd uintptr) {
		cred, cerr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, err
	}
	if cerr != nil {
		return 0, fmt.Errorf("reading the provider's credentials: %w", cerr)
	}
	return cred.Uid, nil
}
