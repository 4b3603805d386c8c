package shm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func openTestWriter(t *testing.T) (*Writer, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "generation")
	w, err := OpenWriter(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	w.Publish(Update{Generation: 5, State: StateRunning}, nil)
	return w, path
}

// TestPageMemfdSealed plays a client that received the page memfd and
// tries everything it could do with the descriptor to make the provider's
// or another client's mapping fault, or to write the page. All of it must
// fail, and the page must read as before.
func TestPageMemfdSealed(t *testing.T) {
	w, _ := openTestWriter(t)
	f, err := w.Dup()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p, err := MapPageMemfd(f)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	fd := int(f.Fd())
	seals, err := unix.FcntlInt(f.Fd(), unix.F_GET_SEALS, 0)
	if err != nil || seals&pageSeals != pageSeals {
		t.Fatalf("seals %#x, %v; want %#x", seals, err, pageSeals)
	}
	reopened, err := os.OpenFile(fmt.Sprintf("/proc/self/fd/%d", fd), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer reopened.Close()
	for _, tc := range []struct {
		what string
		do   func() error
	}{
		{"ftruncate to 0", func() error { return unix.Ftruncate(fd, 0) }},
		{"ftruncate to 8192", func() error { return unix.Ftruncate(fd, 2*PageSize) }},
		{"write", func() error { _, err := unix.Pwrite(fd, []byte("x"), OffGeneration); return err }},
		{"write through /proc/self/fd", func() error { _, err := reopened.WriteAt([]byte("x"), OffGeneration); return err }},
		{"punch a hole", func() error {
			return unix.Fallocate(fd, unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 0, PageSize)
		}},
		{"fallocate beyond the end", func() error { return unix.Fallocate(fd, 0, 0, 2*PageSize) }},
		{"map writable", func() error {
			mem, err := unix.Mmap(fd, 0, PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
			if err == nil {
				unix.Munmap(mem)
			}
			return err
		}},
		{"mprotect a read-only mapping writable", func() error {
			mem, err := unix.Mmap(fd, 0, PageSize, unix.PROT_READ, unix.MAP_SHARED)
			if err != nil {
				t.Errorf("mapping the page memfd read-only: %v", err)
				return err
			}
			defer unix.Munmap(mem)
			return unix.Mprotect(mem, unix.PROT_READ|unix.PROT_WRITE)
		}},
		{"add or remove seals", func() error {
			_, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, unix.F_SEAL_WRITE)
			return err
		}},
	} {
		if err := tc.do(); err == nil {
			t.Errorf("%s: allowed on the page memfd", tc.what)
		}
	}
	if g := p.Generation(); g != 5 {
		t.Fatalf("generation %d after the attempts, want 5", g)
	}
	w.Publish(Update{Generation: 6}, nil)
	if g := p.Generation(); g != 6 {
		t.Fatalf("a client's mapping shows %d after a publish, want 6", g)
	}
}

// TestMapPageMemfdRejects: a client maps only a memfd sealed so that it
// cannot fault or be written by another client.
func TestMapPageMemfdRejects(t *testing.T) {
	memfd := func(seals int) *os.File {
		fd, err := unix.MemfdCreate("test", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
		if err != nil {
			t.Fatal(err)
		}
		f := os.NewFile(uintptr(fd), "test")
		t.Cleanup(func() { f.Close() })
		v := newView()
		v.publish(Update{Generation: 3}, nil)
		if _, err := f.WriteAt(v.mem, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := unix.FcntlInt(f.Fd(), unix.F_ADD_SEALS, seals); err != nil {
			t.Fatal(err)
		}
		return f
	}
	regular, err := os.Create(filepath.Join(t.TempDir(), "page"))
	if err != nil {
		t.Fatal(err)
	}
	defer regular.Close()
	for _, tc := range []struct {
		name string
		f    *os.File
	}{
		{"unsealed", memfd(0)},
		{"resizable", memfd(unix.F_SEAL_FUTURE_WRITE)},
		{"writable by others", memfd(unix.F_SEAL_SHRINK | unix.F_SEAL_GROW)},
		{"a regular file", regular},
	} {
		if p, err := MapPageMemfd(tc.f); !errors.Is(err, ErrBadPage) {
			if p != nil {
				p.Close()
			}
			t.Errorf("%s: MapPageMemfd = %v, want ErrBadPage", tc.name, err)
		}
	}
	ok := memfd(unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_WRITE | unix.F_SEAL_FUTURE_WRITE)
	p, err := MapPageMemfd(ok)
	if err != nil {
		t.Fatalf("a properly sealed memfd: %v", err)
	}
	p.Close()
}

// readFileGeneration reads the page file with pread, as a careful reader
// in another language would.
func readFileGeneration(t *testing.T, path string) (uint64, bool) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil || len(b) != PageSize || (view{mem: b}).check() != nil || binary.LittleEndian.Uint64(b[OffSeq:])&1 != 0 {
		return 0, false
	}
	return binary.LittleEndian.Uint64(b[OffGeneration:]), true
}

// TestWriterSurvivesDamage damages the page file every way its owner or
// root can, in process: no publish faults, Check names the damage and the
// generation the file showed, and Repair restores a valid copy — never
// writing through a symlink.
func TestWriterSurvivesDamage(t *testing.T) {
	for _, tc := range []struct {
		name    string
		damage  func(t *testing.T, path string)
		problem string
		seen    uint64
	}{
		{"truncated", func(t *testing.T, path string) { must(t, os.Truncate(path, 0)) }, "resized to 0 bytes", 0},
		{"extended", func(t *testing.T, path string) { must(t, os.Truncate(path, 3*PageSize)) }, "resized to 12288 bytes", 5},
		{"overwritten higher", func(t *testing.T, path string) {
			writeAt(t, path, binary.LittleEndian.AppendUint64(nil, 1000), OffGeneration)
		}, "overwritten", 1000},
		{"overwritten with garbage", func(t *testing.T, path string) {
			writeAt(t, path, bytes.Repeat([]byte{0xa5}, PageSize), 0)
		}, "overwritten", 0xa5a5a5a5a5a5a5a5},
		{"mode changed", func(t *testing.T, path string) { must(t, os.Chmod(path, 0o666)) }, "mode changed to 0666", 0},
		{"deleted", func(t *testing.T, path string) { must(t, os.Remove(path)) }, "deleted", 0},
		{"replaced by a file", func(t *testing.T, path string) {
			other := path + ".other"
			v := newView()
			v.publish(Update{Generation: 77}, nil)
			must(t, os.WriteFile(other, v.mem, 0o444))
			must(t, os.Rename(other, path))
		}, "replaced by another file", 77},
		{"replaced by a symlink", func(t *testing.T, path string) {
			decoy := filepath.Join(filepath.Dir(path), "decoy")
			must(t, os.WriteFile(decoy, []byte("decoy"), 0o644))
			must(t, os.Remove(path))
			must(t, os.Symlink(decoy, path))
		}, "replaced by a symlink", 0},
		{"replaced by a FIFO", func(t *testing.T, path string) {
			must(t, os.Remove(path))
			must(t, unix.Mkfifo(path, 0o644))
		}, "replaced by a FIFO", 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, path := openTestWriter(t)
			if d := w.Check(); !d.OK() {
				t.Fatalf("Check of an intact file: %+v", d)
			}
			tc.damage(t, path)
			d := w.Check()
			if !strings.Contains(d.Problem, tc.problem) || d.Seen != tc.seen {
				t.Fatalf("Check = %+v, want a problem naming %q and seen %d", d, tc.problem, tc.seen)
			}
			w.Publish(Update{Generation: 6, State: StateRunning}, nil) // must not fault
			if err := w.Repair(); err != nil {
				t.Fatal(err)
			}
			if d := w.Check(); !d.OK() {
				t.Fatalf("Check after Repair: %+v", d)
			}
			fi, err := os.Lstat(path)
			if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm() != 0o444 || fi.Size() != PageSize {
				t.Fatalf("page file after Repair: %v %v", fi, err)
			}
			if g, ok := readFileGeneration(t, path); !ok || g != 6 {
				t.Fatalf("page file after Repair shows %d (valid %v), want 6", g, ok)
			}
			if b, err := os.ReadFile(filepath.Join(filepath.Dir(path), "decoy")); err == nil && string(b) != "decoy" {
				t.Fatalf("Repair wrote through the symlink: the decoy holds %q", b)
			}
			w.Publish(Update{Generation: 7, State: StateRunning}, nil)
			if g, _ := readFileGeneration(t, path); g != 7 {
				t.Fatalf("the repaired file shows %d after a publish, want 7", g)
			}
		})
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func writeAt(t *testing.T, path string, b []byte, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY, 0)
	must(t, err)
	defer f.Close()
	_, err = f.WriteAt(b, off)
	must(t, err)
}

// TestRepairKeepsReplacedInode: a reader that mapped the file before it
// was deleted keeps seeing publishes, and so does a reader of the file
// made in its place.
func TestRepairKeepsReplacedInode(t *testing.T) {
	w, path := openTestWriter(t)
	old, err := MapPage(path)
	must(t, err)
	defer old.Close()
	must(t, os.Remove(path))
	must(t, w.Repair())
	w.Publish(Update{Generation: 8}, nil)
	if g := old.Generation(); g != 8 {
		t.Fatalf("a mapping of the deleted file shows %d, want 8", g)
	}
	if g, _ := readFileGeneration(t, path); g != 8 {
		t.Fatalf("the new file shows %d, want 8", g)
	}
}

// TestRepairInPlaceRevivesMappings: after a truncation and an in-place
// repair, a reader's existing mapping of the file works again.
func TestRepairInPlaceRevivesMappings(t *testing.T) {
	w, path := openTestWriter(t)
	reader, err := MapPage(path)
	must(t, err)
	defer reader.Close()
	must(t, os.Truncate(path, 0))
	w.Publish(Update{Generation: 9}, nil)
	must(t, w.Repair())
	if g := reader.Generation(); g != 9 {
		t.Fatalf("the reader's mapping shows %d after the repair, want 9", g)
	}
}

// TestPublishOrderInFile: a reader of the page file sees the new
// generation, inside an open write section, before the wipe runs — the
// ABI's order holds for the file as for the memfd.
func TestPublishOrderInFile(t *testing.T) {
	w, path := openTestWriter(t)
	f, err := os.Open(path)
	must(t, err)
	defer f.Close()
	called := false
	w.Publish(Update{Generation: 6}, func() {
		called = true
		b := make([]byte, PageSize)
		if _, err := f.ReadAt(b, 0); err != nil {
			t.Fatal(err)
		}
		if g, s := binary.LittleEndian.Uint64(b[OffGeneration:]), binary.LittleEndian.Uint64(b[OffSeq:]); g != 6 || s&1 != 1 {
			t.Errorf("during the wipe the file shows generation %d, sequence %d; want 6 and odd", g, s)
		}
		if wiped := binary.LittleEndian.Uint64(b[OffWiped:]); wiped != 5 {
			t.Errorf("during the wipe the file's wipe mark is %d, want 5", wiped)
		}
	})
	if !called {
		t.Fatal("wipe not called")
	}
}

// TestOpenWriterOverNonRegular: a FIFO, a symlink or nothing at the page
// file's name is replaced by a page (without blocking, without following
// the link); a directory is an error saying to remove it.
func TestOpenWriterOverNonRegular(t *testing.T) {
	dir := t.TempDir()
	decoy := filepath.Join(dir, "decoy")
	must(t, os.WriteFile(decoy, []byte("decoy"), 0o644))
	for name, mk := range map[string]func(string) error{
		"fifo":    func(p string) error { return unix.Mkfifo(p, 0o644) },
		"symlink": func(p string) error { return os.Symlink(decoy, p) },
	} {
		path := filepath.Join(dir, name)
		must(t, mk(path))
		w, err := OpenWriter(path)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		w.Publish(Update{Generation: 2}, nil)
		if g, ok := readFileGeneration(t, path); !ok || g != 2 {
			t.Errorf("%s: the page file shows %d (valid %v)", name, g, ok)
		}
		w.Close()
	}
	if b, _ := os.ReadFile(decoy); string(b) != "decoy" {
		t.Fatalf("OpenWriter wrote through a symlink: %q", b)
	}
	path := filepath.Join(dir, "dir")
	must(t, os.Mkdir(path, 0o755))
	if _, err := OpenWriter(path); err == nil || !errors.Is(err, syscall.EISDIR) && !strings.Contains(err.Error(), "remove") {
		t.Fatalf("OpenWriter over a directory: %v", err)
	}
}

// TestOpenWriterReadsPriorWithoutMapping: a page file truncated while no
// provider ran is read (not mapped) at start: no fault, no prior.
func TestOpenWriterReadsPriorWithoutMapping(t *testing.T) {
	w, path := openTestWriter(t)
	w.Close()
	must(t, os.Truncate(path, 100))
	w2, err := OpenWriter(path)
	must(t, err)
	defer w2.Close()
	if g, valid := w2.Prior(); g != 0 || valid {
		t.Fatalf("Prior of a truncated page = %d, %v", g, valid)
	}
	if fi, _ := os.Stat(path); fi.Size() != PageSize {
		t.Fatalf("page file has %d bytes after OpenWriter", fi.Size())
	}
}

// TestCheckAfterAbandonedWrite: a page left in a write section by a
// provider that died is not damage; the next publish closes the section in
// the memfd and in the file.
func TestCheckAfterAbandonedWrite(t *testing.T) {
	w, path := openTestWriter(t)
	w.Close()
	writeAt(t, path, binary.LittleEndian.AppendUint64(nil, 7), OffSeq)
	w2, err := OpenWriter(path)
	must(t, err)
	defer w2.Close()
	if d := w2.Check(); !d.OK() {
		t.Fatalf("Check of a page left mid-write: %+v", d)
	}
	w2.Publish(Update{Generation: 6}, nil)
	if d := w2.Check(); !d.OK() {
		t.Fatalf("Check after the publish: %+v", d)
	}
	if g, ok := readFileGeneration(t, path); !ok || g != 6 {
		t.Fatalf("file shows %d (valid %v), want 6", g, ok)
	}
}
