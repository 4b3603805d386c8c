package client_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snapsafe/snapsafe/internal/testdevice"
	"github.com/snapsafe/snapsafe/internal/testprovider"
	"github.com/snapsafe/snapsafe/internal/testuser"
	"github.com/snapsafe/snapsafe/runtime/client"
	"github.com/snapsafe/snapsafe/runtime/internal/statedir"
	"github.com/snapsafe/snapsafe/runtime/provider"
)

// A client attaches only to a directory, page and socket of root or its
// own user, served by root or the directory's owner.

var nobody = &syscall.Credential{Uid: 65534, Gid: 65534}

func wantUntrusted(t *testing.T, err error, words ...string) {
	t.Helper()
	if !errors.Is(err, client.ErrUntrusted) {
		t.Fatalf("err = %v, want one matching client.ErrUntrusted", err)
	}
	if errors.Is(err, client.ErrNoProvider) {
		t.Fatalf("err = %v also matches ErrNoProvider", err)
	}
	t.Logf("refused: %v", err)
	for _, w := range words {
		if !strings.Contains(err.Error(), w) {
			t.Fatalf("error %q does not mention %q", err, w)
		}
	}
}

// TestAttachRefusesHostileProvider: uid 65534 made a state directory where
// anyone may (a shared temporary directory) and runs an ordinary provider
// in it. A client of another user that attached would map uid 65534's
// page (a generation it controls) and keep its csprng state in wipe
// regions uid 65534's provider handed out, and can read.
func TestAttachRefusesHostileProvider(t *testing.T) {
	testdevice.RequireRoot(t, "to run a provider as uid 65534")
	dir := filepath.Join(testuser.SharedTmp(t), "snapsafe-0")
	testprovider.StartAs(t, nobody, dir)
	c, err := client.Attach(dir)
	if err == nil {
		c.Close()
	}
	wantUntrusted(t, err, dir, "uid 65534")
}

// TestAttachRefusesPlantedFiles: in root's directory, served by root's
// provider, a socket that is someone else's is refused; a page file that is
// someone else's, writable by anyone or a symbolic link changes nothing for
// a Go client, which maps the provider's sealed page, never the file.
func TestAttachRefusesPlantedFiles(t *testing.T) {
	testdevice.RequireRoot(t, "to give files to uid 65534")
	for _, tc := range []struct {
		name, file string
		plant      func(path string) error
		words      []string // in the refusal; a planted page is not refused
	}{
		{"page of uid 65534", statedir.PageFile, func(p string) error { return os.Chown(p, 65534, 65534) }, nil},
		{"writable page", statedir.PageFile, func(p string) error { return os.Chmod(p, 0o666) }, nil},
		{"page symlink", statedir.PageFile, func(p string) error {
			real := p + ".real"
			if err := os.Rename(p, real); err != nil {
				return err
			}
			return os.Symlink(real, p)
		}, nil},
		{"socket of uid 65534", statedir.SocketFile, func(p string) error { return os.Lchown(p, 65534, 65534) }, []string{"uid 65534"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			testprovider.Start(t, provider.Config{Dir: dir})
			c, err := client.Attach(dir)
			if err != nil {
				t.Fatalf("before the plant: %v", err)
			}
			c.Close()
			path := filepath.Join(dir, tc.file)
			if err := tc.plant(path); err != nil {
				t.Fatal(err)
			}
			c, err = client.Attach(dir)
			if tc.file == statedir.PageFile {
				if err != nil {
					t.Fatalf("Attach with a planted page file: %v, want the sealed page", err)
				}
				defer c.Close()
				g := c.Generation()
				// Whoever can write the file cannot reach the client's page.
				if err := os.WriteFile(path, make([]byte, 4096), 0o666); err != nil {
					t.Fatal(err)
				}
				if g == 0 || c.Generation() != g {
					t.Fatalf("generation %d, then %d after zeroing the file: the client mapped the planted file", g, c.Generation())
				}
				return
			}
			if err == nil {
				c.Close()
			}
			wantUntrusted(t, err, append([]string{path}, tc.words...)...)
		})
	}
}

// TestWatchRechecks: a watcher connection is checked like the first one;
// a directory handed to another user since Attach is refused.
func TestWatchRechecks(t *testing.T) {
	testdevice.RequireRoot(t, "to give the directory to uid 65534")
	dir := t.TempDir()
	testprovider.Start(t, provider.Config{Dir: dir})
	c, err := client.Attach(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	w, err := c.Watch(ctx)
	if err == nil {
		w.Close()
	}
	wantUntrusted(t, err, dir, "uid 65534")
}
