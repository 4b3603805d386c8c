package statedir_test

import (
	"errors"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snapsafe/snapsafe/internal/errs"
	"github.com/snapsafe/snapsafe/internal/eventually"
	"github.com/snapsafe/snapsafe/internal/testdevice"
	"github.com/snapsafe/snapsafe/internal/testprovider"
	"github.com/snapsafe/snapsafe/internal/testuser"
	"github.com/snapsafe/snapsafe/runtime/internal/statedir"
	"github.com/snapsafe/snapsafe/runtime/provider"
)

var nobody = &syscall.Credential{Uid: 65534, Gid: 65534}

// runAs runs argv as cred's user and fails the test if it fails.
func runAs(t *testing.T, cred *syscall.Credential, argv ...string) {
	t.Helper()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v as uid %d: %v: %s", argv, cred.Uid, err, out)
	}
}

func wantUntrusted(t *testing.T, err error, words ...string) {
	t.Helper()
	if !errors.Is(err, errs.ErrUntrusted) {
		t.Fatalf("err = %v, want one matching ErrUntrusted", err)
	}
	msg := err.Error()
	t.Logf("refused: %s", msg)
	for _, w := range words {
		if !strings.Contains(msg, w) {
			t.Fatalf("error %q does not mention %q", msg, w)
		}
	}
	if strings.Contains(msg, "\n") {
		t.Fatalf("error %q is not one line", msg)
	}
}

// TestOpenRefusesForeignDir: a directory another user made, under the name
// a victim's client or provider would use, is refused by both.
func TestOpenRefusesForeignDir(t *testing.T) {
	testdevice.RequireRoot(t, "to create a directory as uid 65534")
	dir := filepath.Join(testuser.SharedTmp(t), "snapsafe-0")
	runAs(t, nobody, "mkdir", "-m", "0755", dir)
	_, err := statedir.Open(dir)
	wantUntrusted(t, err, dir, "uid 65534", "0755")
	_, err = statedir.Create(dir)
	wantUntrusted(t, err, dir, "uid 65534")
	if statedir.Trusted(dir) == nil {
		t.Fatal("Trusted accepted uid 65534's directory")
	}
	// A directory root owns is trusted by everyone.
	if err := os.Chown(dir, 0, 0); err != nil {
		t.Fatal(err)
	}
	d, err := statedir.Open(dir)
	if err != nil {
		t.Fatalf("root's directory refused: %v", err)
	}
	d.Close()
}

// TestOpenRefusesWritableDir: a directory group or others may write lets
// them plant files, even when root owns it (a sticky bit does not help:
// planting needs no removal).
func TestOpenRefusesWritableDir(t *testing.T) {
	for _, mode := range []uint32{0o777, 0o775, 0o757, 0o1777, 0o770} {
		dir := filepath.Join(t.TempDir(), "state")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		_, err := statedir.Open(dir)
		wantUntrusted(t, err, dir, "chmod go-w")
		if _, err := statedir.Create(dir); !errors.Is(err, errs.ErrUntrusted) {
			t.Fatalf("Create on a %#o directory = %v, want ErrUntrusted", mode, err)
		}
	}
	for _, mode := range []uint32{0o755, 0o700, 0o1755, 0o2755} {
		dir := filepath.Join(t.TempDir(), "state")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Chmod(dir, mode); err != nil {
			t.Fatal(err)
		}
		d, err := statedir.Open(dir)
		if err != nil {
			t.Fatalf("a %#o directory of our own refused: %v", mode, err)
		}
		d.Close()
	}
}

// TestOpenRefusesSymlinkedDir: the state directory itself is never reached
// through a symbolic link, also when the path ends in a slash (which makes
// the kernel follow it despite O_NOFOLLOW).
func TestOpenRefusesSymlinkedDir(t *testing.T) {
	root := t.TempDir()
	target := filepath.Join(root, "target")
	if err := os.Mkdir(target, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(root, "link")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{link, link + "/", link + "/."} {
		_, err := statedir.Open(p)
		wantUntrusted(t, err, link, "symbolic link")
		_, err = statedir.Create(p)
		wantUntrusted(t, err, "symbolic link")
	}
	if ents, _ := os.ReadDir(target); len(ents) != 0 {
		t.Fatalf("the link's target got %d entries", len(ents))
	}
	if _, err := statedir.Open(filepath.Join(root, "absent")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a missing directory: %v, want fs.ErrNotExist", err)
	}
}

// TestReadPrivateRefuses: the provider reads only a regular private file,
// reached without a symbolic link, owned by itself, that nobody else may
// write; a FIFO planted under the name does not hang it.
func TestReadPrivateRefuses(t *testing.T) {
	testdevice.RequireRoot(t, "to give a file to uid 65534")
	for _, tc := range []struct {
		name  string
		plant func(t *testing.T, file string)
		words []string
	}{
		{"symlink", func(t *testing.T, file string) {
			real := filepath.Join(t.TempDir(), "real")
			if err := os.WriteFile(real, make([]byte, 4096), 0o444); err != nil {
				t.Fatal(err)
			}
			if err := os.Symlink(real, file); err != nil {
				t.Fatal(err)
			}
		}, []string{"symbolic link"}},
		{"other owner", func(t *testing.T, file string) {
			if err := os.WriteFile(file, make([]byte, 4096), 0o444); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(file, 65534, 65534); err != nil {
				t.Fatal(err)
			}
		}, []string{"uid 65534"}},
		{"world-writable", func(t *testing.T, file string) {
			if err := os.WriteFile(file, make([]byte, 4096), 0o444); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(file, 0o666); err != nil {
				t.Fatal(err)
			}
		}, []string{"0666"}},
		{"fifo", func(t *testing.T, file string) {
			if err := syscall.Mkfifo(file, 0o444); err != nil {
				t.Fatal(err)
			}
		}, []string{"not a regular file"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			file := filepath.Join(dir, statedir.WatchersFile)
			tc.plant(t, file)
			d, err := statedir.Open(dir)
			if err != nil {
				t.Fatal(err)
			}
			defer d.Close()
			opened := make(chan error, 1)
			go func() {
				_, err := d.ReadPrivate(statedir.WatchersFile)
				opened <- err
			}()
			select {
			case err = <-opened:
			case <-time.After(eventually.Timeout):
				t.Fatalf("ReadPrivate hung for %v on a planted %s", eventually.Timeout, tc.name)
			}
			wantUntrusted(t, err, append([]string{file}, tc.words...)...)
		})
	}
}

// TestDialRefusesSwappedProvider: a client opened the victim's directory,
// then someone who may write its parent put another user's state directory
// in its place before the client connected. connect(2) takes a path, so it
// reaches the other user's provider; the peer check refuses it.
func TestDialRefusesSwappedProvider(t *testing.T) {
	testdevice.RequireRoot(t, "to run a provider as uid 65534")
	parent := t.TempDir()
	victim := filepath.Join(parent, "victim")
	testprovider.Start(t, provider.Config{Dir: victim}) // root's provider
	hostile := filepath.Join(testuser.SharedTmp(t), "hostile")
	testprovider.StartAs(t, nobody, hostile)

	d, err := statedir.Open(victim)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if err := os.Rename(victim, filepath.Join(parent, "moved")); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(hostile, victim); err != nil {
		t.Fatal(err)
	}
	uc, err := d.Dial()
	if err == nil {
		uc.Close()
	}
	wantUntrusted(t, err, "runs as uid 65534", "owner (uid 0)")
}

// TestDialRefusesForeignSocket: a control socket owned by another user is
// refused before the client connects.
func TestDialRefusesForeignSocket(t *testing.T) {
	testdevice.RequireRoot(t, "to give a socket to uid 65534")
	dir := t.TempDir()
	sock := filepath.Join(dir, statedir.SocketFile)
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := os.Lchown(sock, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	uc, err := statedir.Dial(dir)
	if err == nil {
		uc.Close()
	}
	wantUntrusted(t, err, sock, "uid 65534")
}
