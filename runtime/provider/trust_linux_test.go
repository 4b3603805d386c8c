package provider

import (
	"errors"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/snapsafe/snapsafe/internal/testdevice"
	"github.com/snapsafe/snapsafe/internal/testuser"
	"github.com/snapsafe/snapsafe/runtime/internal/statedir"
)

// The provider refuses a state directory it cannot trust, and never writes
// through a symbolic link or a hard link planted in it.

func newProvider(dir string) (*Provider, error) {
	return New(Config{Dir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
}

func wantRefused(t *testing.T, err error, words ...string) {
	t.Helper()
	if !errors.Is(err, ErrUntrusted) {
		t.Fatalf("New = %v, want an error matching ErrUntrusted", err)
	}
	t.Logf("refused: %v", err)
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("error %q does not mention %q", err, w)
		}
	}
}

func wantEmpty(t *testing.T, dir string) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("the refused provider created %s in %s", e.Name(), dir)
	}
}

// TestNewRefusesForeignDir: uid 65534 made the directory a root provider
// is told to use (in a shared temporary directory, where anyone may).
// Adopting it would let uid 65534 replace the page and the socket at will.
func TestNewRefusesForeignDir(t *testing.T) {
	testdevice.RequireRoot(t, "to create a directory as uid 65534")
	dir := filepath.Join(testuser.SharedTmp(t), "snapsafe-0")
	mkdir := exec.Command("mkdir", "-m", "0755", dir)
	mkdir.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	if out, err := mkdir.CombinedOutput(); err != nil {
		t.Fatalf("mkdir as uid 65534: %v: %s", err, out)
	}
	p, err := newProvider(dir)
	if err == nil {
		p.Close()
	}
	wantEmpty(t, dir)
	wantRefused(t, err, dir, "uid 65534", "0755")
}

// TestNewRefusesWritableDir: a directory that group or others may write,
// even root's and sticky, lets them plant the page or the socket.
func TestNewRefusesWritableDir(t *testing.T) {
	for _, mode := range []uint32{0o777, 0o1777, 0o775} {
		dir := filepath.Join(t.TempDir(), "state")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		p, err := newProvider(dir)
		if err == nil {
			p.Close()
		}
		wantEmpty(t, dir)
		wantRefused(t, err, dir, "mode", "chmod go-w")
	}
}

// TestNewRefusesSymlinkedDir: the state directory is never reached through
// a symbolic link, and nothing is created where one points.
func TestNewRefusesSymlinkedDir(t *testing.T) {
	root := t.TempDir()
	target := filepath.Join(root, "elsewhere")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(root, "state")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{link, link + "/"} {
		p, err := newProvider(dir)
		if err == nil {
			p.Close()
		}
		wantEmpty(t, target)
		wantRefused(t, err, link, "symbolic link")
	}
	// A dangling link is not followed to create the directory either.
	dangling := filepath.Join(root, "dangling")
	if err := os.Symlink(filepath.Join(root, "created-through-link"), dangling); err != nil {
		t.Fatal(err)
	}
	_, err := newProvider(dangling)
	wantRefused(t, err, "symbolic link")
	if _, err := os.Lstat(filepath.Join(root, "created-through-link")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the provider created the dangling link's target: %v", err)
	}
}

// TestNewRefusesPlantedLinks: a symbolic or hard link planted in the state
// directory under the lock's name is refused, one under the page's name is
// replaced by a file of the provider's own, and the file either points to
// keeps its contents and mode (the page would be truncated to 4096 bytes
// and made 0444; the lock truncated and given a pid).
func TestNewRefusesPlantedLinks(t *testing.T) {
	const precious = "precious contents\n"
	for _, name := range []string{statedir.PageFile, statedir.LockFile} {
		for _, kind := range []string{"symlink", "hardlink", "dangling symlink"} {
			t.Run(name+" "+kind, func(t *testing.T) {
				root := t.TempDir()
				dir := filepath.Join(root, "state")
				if err := os.Mkdir(dir, 0o755); err != nil {
					t.Fatal(err)
				}
				victim := filepath.Join(root, "victim")
				planted := filepath.Join(dir, name)
				var err error
				switch kind {
				case "symlink":
					if err = os.WriteFile(victim, []byte(precious), 0o600); err == nil {
						err = os.Symlink(victim, planted)
					}
				case "hardlink":
					if err = os.WriteFile(victim, []byte(precious), 0o600); err == nil {
						err = os.Link(victim, planted)
					}
				case "dangling symlink":
					err = os.Symlink(victim, planted)
				}
				if err != nil {
					t.Fatal(err)
				}
				p, newErr := newProvider(dir)
				if newErr == nil {
					p.Close()
				}
				fi, err := os.Stat(victim)
				switch {
				case kind == "dangling symlink":
					if !errors.Is(err, os.ErrNotExist) {
						t.Fatalf("the provider created %s through the link: %v", victim, err)
					}
				case err != nil:
					t.Fatal(err)
				default:
					if got, _ := os.ReadFile(victim); string(got) != precious || fi.Mode().Perm() != 0o600 {
						t.Fatalf("the link's target now has mode %v and %d bytes: written through the link", fi.Mode().Perm(), len(got))
					}
				}
				// The page is replaced by a file of the provider's own (the
				// link's target untouched); the lock file is refused.
				if name == statedir.PageFile {
					if newErr != nil {
						t.Fatalf("New with a planted %s: %v, want the link replaced", kind, newErr)
					}
					if fi, err := os.Lstat(planted); err != nil || !fi.Mode().IsRegular() {
						t.Fatalf("%s after New: %v, %v; want a regular file of the provider's", planted, fi, err)
					}
					return
				}
				wantRefused(t, newErr, planted)
			})
		}
	}
}

// TestNewCreatesAndCleansUp: a missing directory is created 0755 (parents
// too), the socket is 0666 and the page 0444, and a provider that stops
// removes its socket.
func TestNewCreatesAndCleansUp(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b", "state")
	tp := startProvider(t, dir)
	for name, want := range map[string]os.FileMode{"": 0o755 | os.ModeDir, statedir.PageFile: 0o444, statedir.SocketFile: 0o666 | os.ModeSocket} {
		fi, err := os.Lstat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode() != want {
			t.Errorf("%s/%s has mode %v, want %v", dir, name, fi.Mode(), want)
		}
	}
	tp.stop()
	if _, err := os.Lstat(filepath.Join(dir, statedir.SocketFile)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("control socket after stop: %v, want it removed", err)
	}
}

// TestSecondProviderNamesFirst: the lock, now opened through the
// directory's descriptor, still tells a second provider the first one's
// pid.
func TestSecondProviderNamesFirst(t *testing.T) {
	dir := t.TempDir()
	startProvider(t, dir)
	_, err := newProvider(dir)
	if !errors.Is(err, ErrProviderRunning) || !strings.Contains(err.Error(), "(pid "+strconv.Itoa(os.Getpid())+")") {
		t.Fatalf("second provider: %v, want ErrProviderRunning naming pid %d", err, os.Getpid())
	}
}

// TestLockFileIsPrivate: flock needs no write permission, so a lock file
// others could open would let any user hold a shared lock on it and keep
// every later provider from starting. The lock is 0600 (an older 0644 one
// is made so), and uid 65534 cannot take it.
func TestLockFileIsPrivate(t *testing.T) {
	testdevice.RequireRoot(t, "to try the lock as uid 65534")
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatalf("setpriv (util-linux) is needed to act as uid 65534: %v", err)
	}
	flock, err := exec.LookPath("flock")
	if err != nil {
		t.Fatalf("flock (util-linux) is needed to act as uid 65534: %v", err)
	}
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	lock := filepath.Join(dir, statedir.LockFile)
	if err := os.WriteFile(lock, nil, 0o644); err != nil { // as an older provider left it
		t.Fatal(err)
	}
	tp := startProvider(t, dir)
	if fi, err := os.Stat(lock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("lock file: %v; want mode 0600 (got %v)", err, fi.Mode().Perm())
	}
	tp.stop()
	// The attack: a shared lock held by another user while the provider is down.
	out, err := exec.Command(setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", flock, "-n", "-s", lock, "true").CombinedOutput()
	if err == nil {
		t.Fatalf("uid 65534 took a lock on %s: %s", lock, out)
	}
	startProvider(t, dir) // and a restart still works
}
