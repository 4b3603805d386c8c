package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/snapsafe/snapsafe/csprng"
	"github.com/snapsafe/snapsafe/internal/eventually"
	"github.com/snapsafe/snapsafe/internal/testdevice"
	"github.com/snapsafe/snapsafe/runtime/client"
	"github.com/snapsafe/snapsafe/shm"
	"golang.org/x/sys/unix"
)

// The tests here damage the page file the way a hostile or clumsy root (or
// the provider's own user) would — truncate it, overwrite it, delete or
// replace it, fill its filesystem — while a real provider process and a
// real Go client process (runtime/client and csprng) use it. A client or
// provider killed by SIGBUS shows up as a dead process.

const envDamageClient = "SNAPSAFE_TEST_DAMAGE_CLIENT"

// The client role: the test binary re-executed with envDamageClient set.
// It attaches with runtime/client and csprng, then reads the generation in
// a loop — the one-load probe, a seqlock snapshot, csprng output — and
// prints every generation it sees ("gen N"). It exits 1 if the generation
// ever goes backwards, and 0 when its stdin closes.
func init() {
	if os.Getenv(envDamageClient) == "" {
		return
	}
	os.Exit(damageClient(os.Getenv("SNAPSAFE_DIR")))
}

func damageClient(dir string) int {
	c, err := client.Attach(dir)
	if err != nil {
		fmt.Println("attach:", err)
		return 1
	}
	csprng.Uint64()
	fmt.Println("mode", csprng.CurrentMode())
	quit := make(chan struct{})
	go func() { io.Copy(io.Discard, os.Stdin); close(quit) }()
	var last, lastCSPRNG uint64
	buf := make([]byte, 64)
	for {
		select {
		case <-quit:
			fmt.Println("done", last)
			return 0
		default:
		}
		g := c.Generation()
		if g < last {
			fmt.Printf("backwards: generation %d after %d\n", g, last)
			return 1
		}
		if g != last {
			fmt.Println("gen", g)
			last = g
		}
		if _, err := c.Snapshot(); err != nil {
			fmt.Println("snapshot:", err)
		}
		csprng.Uint64()
		csprng.Read(buf)
		if cg := csprng.Generation(); cg != lastCSPRNG {
			fmt.Println("csprng", cg)
			lastCSPRNG = cg
		}
		time.Sleep(200 * time.Microsecond)
	}
}

type damageClientProc struct {
	cmd   *exec.Cmd
	stdin io.Closer
	out   *syncBuffer
	done  chan struct{}
	err   error
}

func startDamageClient(t *testing.T, dir string) *damageClientProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), envDamageClient+"=1", "SNAPSAFE_DIR="+dir)
	out := new(syncBuffer)
	cmd.Stdout, cmd.Stderr = out, out
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &damageClientProc{cmd: cmd, stdin: stdin, out: out, done: make(chan struct{})}
	go func() { c.err = cmd.Wait(); close(c.done) }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-c.done
		if t.Failed() {
			t.Logf("client output:\n%s", out)
		}
	})
	eventually.True(t, "the client to attach", func() bool {
		c.alive(t)
		return strings.Contains(out.String(), "mode provider\n")
	})
	return c
}

// alive fails the test if the client process has exited.
func (c *damageClientProc) alive(t *testing.T) {
	t.Helper()
	select {
	case <-c.done:
		t.Fatalf("the client process died: %v\n%s", c.err, c.out)
	default:
	}
}

// saw reports whether the client printed a generation of at least g, both
// from its page probe and from csprng.
func (c *damageClientProc) saw(t *testing.T, g uint64) bool {
	t.Helper()
	c.alive(t)
	var page, rng uint64
	for _, line := range strings.Split(c.out.String(), "\n") {
		f := strings.Fields(line)
		if len(f) != 2 {
			continue
		}
		v, _ := strconv.ParseUint(f[1], 10, 64)
		switch f[0] {
		case "gen":
			page = max(page, v)
		case "csprng":
			rng = max(rng, v)
		}
	}
	return page >= g && rng >= g
}

// finish ends the client and checks that it never saw the generation go
// backwards.
func (c *damageClientProc) finish(t *testing.T) {
	t.Helper()
	c.alive(t)
	c.stdin.Close()
	select {
	case <-c.done:
	case <-time.After(10 * time.Second):
		t.Fatalf("the client did not exit:\n%s", c.out)
	}
	if c.err != nil {
		t.Fatalf("the client failed: %v\n%s", c.err, c.out)
	}
}

// alive fails the test if the provider process has exited.
func (p *provider) alive(t *testing.T) {
	t.Helper()
	// A dead child stays a zombie until the test reaps it.
	if !running(p.cmd.Process.Pid) {
		t.Fatalf("the provider died:\n%s", p.log)
	}
}

// pageBytes is a valid page showing generation g.
func pageBytes(g uint64) []byte {
	b := make([]byte, shm.PageSize)
	binary.LittleEndian.PutUint32(b[shm.OffMagic:], shm.Magic)
	binary.LittleEndian.PutUint16(b[shm.OffVersion:], shm.Version)
	binary.LittleEndian.PutUint32(b[shm.OffSize:], shm.PageSize)
	binary.LittleEndian.PutUint64(b[shm.OffGeneration:], g)
	binary.LittleEndian.PutUint64(b[shm.OffSeq:], 2)
	binary.LittleEndian.PutUint64(b[shm.OffWiped:], g)
	binary.LittleEndian.PutUint32(b[shm.OffState:], uint32(shm.StateRunning))
	return b
}

// overwrite writes b over the start of the file at path in place, as
// `dd conv=notrunc` would: readers that have the file mapped see it.
func overwrite(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, 0); err != nil {
		t.Fatal(err)
	}
}

// fileGeneration reads the page file the way a reader in another language
// would find it: it reports the generation when the file is a regular file
// of exactly one valid page.
func fileGeneration(path string) (uint64, bool) {
	fi, err := os.Lstat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Size() != shm.PageSize || fi.Mode().Perm() != 0o444 {
		return 0, false
	}
	b, err := os.ReadFile(path)
	if err != nil || len(b) != shm.PageSize ||
		binary.LittleEndian.Uint32(b[shm.OffMagic:]) != shm.Magic ||
		binary.LittleEndian.Uint16(b[shm.OffVersion:]) != shm.Version ||
		binary.LittleEndian.Uint32(b[shm.OffSize:]) != shm.PageSize ||
		binary.LittleEndian.Uint64(b[shm.OffSeq:])&1 != 0 {
		return 0, false
	}
	return binary.LittleEndian.Uint64(b[shm.OffGeneration:]), true
}

// republished waits until the page file is a valid copy showing the
// provider's current generation.
func republished(t *testing.T, p *provider, dir string) uint64 {
	t.Helper()
	var g uint64
	eventually.True(t, "the provider to republish the page file", func() bool {
		p.alive(t)
		fg, ok := fileGeneration(filepath.Join(dir, "generation"))
		if !ok {
			return false
		}
		g = statusAs(t, p.cred, dir).Generation
		return fg == g
	})
	return g
}

func bumpTo(t *testing.T, dir string) uint64 {
	t.Helper()
	g, err := strconv.ParseUint(mustCtl(t, dir, "bump"), 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// TestIntegrationPageTruncated truncates the page file to 0, again and
// again, while a Go client reads the generation in a loop and the provider
// bumps. Before the fix the client died of SIGBUS at once and the provider
// at its next bump. Now nobody dies, the client keeps seeing bumps, and the
// provider restores the file.
func TestIntegrationPageTruncated(t *testing.T) {
	dir := stateDir(t)
	p := startProvider(t, dir)
	c := startDamageClient(t, dir)
	page := filepath.Join(dir, "generation")

	var wg sync.WaitGroup
	stop := make(chan struct{})
	var bumpErr error
	wg.Add(1)
	go func() { // bump all along, as restore events would
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			out, err := exec.Command(filepath.Join(bin, "snapsafectl"), "--dir", dir, "bump").CombinedOutput()
			if err != nil {
				bumpErr = fmt.Errorf("bump while the page was being truncated: %v: %s", err, out)
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	for range 5 {
		if err := os.Truncate(page, 0); err != nil {
			t.Fatal(err)
		}
		republished(t, p, dir)
		c.alive(t)
	}
	close(stop)
	wg.Wait()
	if bumpErr != nil {
		t.Fatal(bumpErr)
	}
	g := bumpTo(t, dir)
	eventually.True(t, "the client to see the last bump", func() bool { return c.saw(t, g) })
	if fg := republished(t, p, dir); fg != g {
		t.Fatalf("page file shows %d after the last bump, want %d", fg, g)
	}
	c.finish(t)
	p.alive(t)
	if n := strings.Count(p.log.String(), "page file was damaged"); n == 0 || n > 5 {
		t.Errorf("the provider logged %d warnings for 5 truncations, want one per incident:\n%s", n, p.log)
	}
}

// TestIntegrationPageOverwrittenHigher: root writes a valid page showing
// generation 1000 over the file, in place. Readers of the file see 1000 at
// once, so the provider must never publish anything lower again: its next
// bump goes above 1000. (Before the fix it went on from its own count, so
// the generation went 1000 -> 6.)
func TestIntegrationPageOverwrittenHigher(t *testing.T) {
	dir := stateDir(t)
	p := startProvider(t, dir)
	c := startDamageClient(t, dir)
	page := filepath.Join(dir, "generation")
	if g := status(t, dir).Generation; g >= 1000 {
		t.Fatalf("generation %d already", g)
	}
	overwrite(t, page, pageBytes(1000))
	if g := bumpTo(t, dir); g <= 1000 {
		t.Fatalf("bump after the page showed 1000 published %d: the file's readers saw the generation go down", g)
	}
	g := republished(t, p, dir)
	eventually.True(t, "the client to see the bump", func() bool { return c.saw(t, g) })

	// Without a bump, the periodic check does the same.
	overwrite(t, page, pageBytes(g+1000))
	eventually.True(t, "the provider to move past the file's generation", func() bool {
		return status(t, dir).Generation > g+1000
	})
	g = republished(t, p, dir)
	eventually.True(t, "the client to see it", func() bool { return c.saw(t, g) })
	c.finish(t)
}

// TestIntegrationPageOverwrittenGarbageOrLower: garbage, or a valid page
// showing a lower generation, written over the file is simply overwritten
// by the provider; the generation never goes backwards for anyone.
func TestIntegrationPageOverwrittenGarbageOrLower(t *testing.T) {
	dir := stateDir(t)
	p := startProvider(t, dir)
	c := startDamageClient(t, dir)
	page := filepath.Join(dir, "generation")
	mustCtl(t, dir, "bump", "--min", "100")

	overwrite(t, page, bytes.Repeat([]byte("x"), shm.PageSize))
	if g := republished(t, p, dir); g != 100 {
		t.Fatalf("after garbage the generation is %d, want 100 (garbage is not a generation)", g)
	}
	overwrite(t, page, pageBytes(3))
	if g := republished(t, p, dir); g != 100 {
		t.Fatalf("after a lower page the generation is %d, want 100", g)
	}
	if g := bumpTo(t, dir); g != 101 {
		t.Fatalf("bump = %d, want 101", g)
	}
	if g := republished(t, p, dir); g != 101 {
		t.Fatalf("file shows %d after the bump, want 101", g)
	}
	eventually.True(t, "the client to see 101", func() bool { return c.saw(t, 101) })
	c.finish(t)
}

// TestIntegrationPageDeletedOrReplaced: the provider recreates a deleted
// page file, and replaces whatever took its place — another file, or a
// symlink, which it must never write through.
func TestIntegrationPageDeletedOrReplaced(t *testing.T) {
	dir := stateDir(t)
	p := startProvider(t, dir)
	c := startDamageClient(t, dir)
	page := filepath.Join(dir, "generation")

	if err := os.Remove(page); err != nil {
		t.Fatal(err)
	}
	republished(t, p, dir)
	g := bumpTo(t, dir)
	if fg := republished(t, p, dir); fg != g {
		t.Fatalf("recreated file shows %d after a bump to %d", fg, g)
	}

	other := filepath.Join(dir, "other")
	if err := os.WriteFile(other, []byte("not a page"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, page); err != nil {
		t.Fatal(err)
	}
	republished(t, p, dir)

	decoy := filepath.Join(dir, "decoy")
	if err := os.WriteFile(decoy, []byte("decoy"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(page); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(decoy, page); err != nil {
		t.Fatal(err)
	}
	republished(t, p, dir)
	if b, _ := os.ReadFile(decoy); string(b) != "decoy" {
		t.Fatalf("the provider wrote through a symlink: the decoy now holds %q", b)
	}
	g = bumpTo(t, dir)
	if fg := republished(t, p, dir); fg != g {
		t.Fatalf("file shows %d after a bump to %d", fg, g)
	}
	eventually.True(t, "the client to see the bumps", func() bool { return c.saw(t, g) })
	c.finish(t)
}

// TestIntegrationRestartAfterPageLost: kill -9 the provider, lose the page
// file (deleted, garbage, or a valid page showing an older generation),
// restart: the generation continues above the old one. Before the fix it
// began again at 1.
func TestIntegrationRestartAfterPageLost(t *testing.T) {
	for _, tc := range []struct {
		name string
		lose func(t *testing.T, page string)
	}{
		{"deleted", func(t *testing.T, page string) {
			if err := os.Remove(page); err != nil {
				t.Fatal(err)
			}
		}},
		{"garbage", func(t *testing.T, page string) { overwrite(t, page, bytes.Repeat([]byte{0xa5}, shm.PageSize)) }},
		{"truncated", func(t *testing.T, page string) {
			if err := os.Truncate(page, 0); err != nil {
				t.Fatal(err)
			}
		}},
		{"older page", func(t *testing.T, page string) { overwrite(t, page, pageBytes(3)) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := stateDir(t)
			p := startProvider(t, dir)
			mustCtl(t, dir, "bump", "--min", "50")
			p.stop(t, syscall.SIGKILL)
			tc.lose(t, filepath.Join(dir, "generation"))
			p = startProvider(t, dir)
			if g := status(t, dir).Generation; g <= 50 {
				t.Fatalf("generation %d after the restart, was 50", g)
			}
			republished(t, p, dir)
			fi, err := os.Stat(filepath.Join(dir, "highwater"))
			if err != nil || fi.Mode().Perm() != 0o600 {
				t.Fatalf("high-water file: %v, mode %v; want mode 0600", err, fi.Mode())
			}
		})
	}
}

// TestIntegrationPageDamageAsProviderUser: a provider run by an ordinary
// user, whose page file that user (the owner) truncates and deletes; and a
// restart of that provider, which must reopen its own 0444 page file.
func TestIntegrationPageDamageAsProviderUser(t *testing.T) {
	testdevice.RequireRoot(t, "to run the provider and the damage as uid 65534")
	dir := stateDir(t)
	if err := os.Chown(dir, 65534, 65534); err != nil {
		t.Fatal(err)
	}
	nobody := &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
	asNobody := func(script string) {
		t.Helper()
		cmd := exec.Command("/bin/sh", "-c", script)
		cmd.Dir = dir
		cmd.SysProcAttr = nobody
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s as uid 65534: %v: %s", script, err, out)
		}
	}
	// Only uid 65534's own clients trust its directory, so the checks run
	// snapsafectl as uid 65534; Go clients surviving the damage are shown
	// against a root provider in TestIntegrationPageTruncated.
	p := startProviderAs(t, nobody.Credential, dir)
	asNobody("chmod 0644 generation && : > generation")
	republished(t, p, dir)
	asNobody("rm -f generation")
	republished(t, p, dir)
	out, errs, code := ctlAs(t, nobody.Credential, dir, "bump")
	if code != 0 {
		t.Fatalf("bump as uid 65534 exited %d: %s", code, errs)
	}
	g, err := strconv.ParseUint(strings.TrimSpace(out), 10, 64)
	if err != nil {
		t.Fatalf("bump as uid 65534 printed %q: %v", out, err)
	}
	p.stop(t, syscall.SIGKILL)
	startProviderAs(t, nobody.Credential, dir)
	if got := statusAs(t, nobody.Credential, dir).Generation; got <= g {
		t.Fatalf("generation %d after restarting the uid 65534 provider, was %d", got, g)
	}
}

// TestIntegrationFullDisk: on a full filesystem the provider exits 1 with
// a one-line error naming the directory and what to do. Before the fix it
// died of SIGBUS writing the page it had mapped without reserving space.
func TestIntegrationFullDisk(t *testing.T) {
	testdevice.RequireRoot(t, "to mount a tiny tmpfs")
	for _, tc := range []struct {
		name string
		// free says how many bytes to leave free after filling the
		// filesystem; the lock file is created first.
		free int
		want string
	}{
		{"page", 0, "reserving the generation page in"},
		{"high-water", 4096, "reserving the high-water file in"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mnt := t.TempDir()
			if err := unix.Mount("tmpfs", mnt, "tmpfs", 0, "size=12k,mode=0755"); err != nil {
				testdevice.Skip(t, "cannot mount a tmpfs: %v", err)
			}
			t.Cleanup(func() {
				if err := unix.Unmount(mnt, 0); err != nil {
					t.Errorf("unmounting %s: %v", mnt, err)
				}
			})
			// The provider writes its pid into the lock file: give it a
			// page of its own beforehand, then fill the rest.
			if err := os.WriteFile(filepath.Join(mnt, "lock"), []byte("1\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			fill(t, filepath.Join(mnt, "filler"), tc.free)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, filepath.Join(bin, "snapsafed"), "--dir", mnt, "--backend", "manual")
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 1 {
				t.Fatalf("snapsafed on a full filesystem: %v, want exit 1:\n%s", err, &stderr)
			}
			var last string
			for sc := bufio.NewScanner(&stderr); sc.Scan(); {
				if strings.HasPrefix(sc.Text(), "goroutine ") || strings.Contains(sc.Text(), "SIGBUS") {
					t.Fatalf("snapsafed crashed:\n%s", stderr.String())
				}
				last = sc.Text()
			}
			want := "snapsafed: " + tc.want + " " + mnt + ": no space left on device: free space or use another --dir"
			if last != want {
				t.Fatalf("snapsafed's last line is\n  %q\nwant\n  %q\nfull output:\n%s", last, want, stderr.String())
			}
		})
	}
}

// fill writes to path until the filesystem is full, then frees free bytes.
func fill(t *testing.T, path string, free int) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := make([]byte, 4096)
	n := 0
	for {
		w, err := f.Write(chunk)
		n += w
		if errors.Is(err, syscall.ENOSPC) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
	}
	if free > 0 {
		if err := f.Truncate(int64(n - free)); err != nil {
			t.Fatal(err)
		}
	}
}
