package initramfs

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// A directory entry, computed by hand from the newc layout: the 110-byte
// header, "bin" and its NUL (114 bytes), two bytes of padding.
func TestCPIOHeaderGolden(t *testing.T) {
	var buf bytes.Buffer
	c := NewCPIOWriter(&buf)
	if err := c.Dir("bin", 0o755); err != nil {
		t.Fatal(err)
	}
	want := "070701" +
		"00000001" + // ino
		"000041ED" + // mode: directory, 0755
		"00000000" + "00000000" + // uid, gid
		"00000002" + // nlink
		"00000000" + // mtime
		"00000000" + // filesize
		"00000000" + "00000000" + // devmajor, devminor
		"00000000" + "00000000" + // rdevmajor, rdevminor
		"00000004" + // namesize: "bin" and NUL
		"00000000" + // check
		"bin\x00" + "\x00\x00"
	if got := buf.String(); got != want {
		t.Fatalf("got\n%q\nwant\n%q", got, want)
	}
}

// cpioEntry is one entry as read back by readCPIO.
type cpioEntry struct {
	name                 string
	ino, mode, nlink     uint64
	rdevMajor, rdevMinor uint64
	data                 string
}

// readCPIO parses a newc archive, checking the magic, the padding and the
// trailer, and returns its entries without the trailer.
func readCPIO(b []byte) ([]cpioEntry, error) {
	var out []cpioEntry
	off := 0
	align := func(n int) int { return (n + 3) &^ 3 }
	for {
		if off+110 > len(b) {
			return nil, fmt.Errorf("truncated header at %d", off)
		}
		h := string(b[off : off+110])
		if h[:6] != "070701" {
			return nil, fmt.Errorf("bad magic %q at %d", h[:6], off)
		}
		field := func(i int) uint64 {
			v, err := strconv.ParseUint(h[6+8*i:14+8*i], 16, 32)
			if err != nil {
				panic(err)
			}
			return v
		}
		namesize, filesize := int(field(11)), int(field(6))
		nameEnd := off + 110 + namesize
		name := string(b[off+110 : nameEnd-1])
		if b[nameEnd-1] != 0 {
			return nil, fmt.Errorf("%s: name not NUL-terminated", name)
		}
		dataOff := align(nameEnd)
		if !allZero(b[nameEnd:dataOff]) {
			return nil, fmt.Errorf("%s: padding after name is not zero", name)
		}
		end := dataOff + filesize
		next := align(end)
		if next > len(b) || !allZero(b[end:next]) {
			return nil, fmt.Errorf("%s: data or padding truncated or not zero", name)
		}
		if name == "TRAILER!!!" {
			if next != len(b) {
				return nil, fmt.Errorf("%d bytes after the trailer", len(b)-next)
			}
			return out, nil
		}
		out = append(out, cpioEntry{
			name: name, ino: field(0), mode: field(1), nlink: field(4),
			rdevMajor: field(9), rdevMinor: field(10), data: string(b[dataOff:end]),
		})
		off = next
	}
}

func allZero(b []byte) bool { return bytes.Count(b, []byte{0}) == len(b) }

func TestCPIORoundTrip(t *testing.T) {
	var buf bytes.Buffer
	c := NewCPIOWriter(&buf)
	steps := []error{
		c.Dir("dev", 0o755),
		c.CharDev("dev/console", 0o600, 5, 1),
		c.File("hello", 0o644, []byte("hello, world\n")), // 13 bytes: needs padding
		c.File("empty", 0o600, nil),
		c.Symlink("sh", "busybox"),
		c.Close(),
	}
	for i, err := range steps {
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	got, err := readCPIO(buf.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	want := []cpioEntry{
		{name: "dev", ino: 1, mode: 0o040755, nlink: 2},
		{name: "dev/console", ino: 2, mode: 0o020600, nlink: 1, rdevMajor: 5, rdevMinor: 1},
		{name: "hello", ino: 3, mode: 0o100644, nlink: 1, data: "hello, world\n"},
		{name: "empty", ino: 4, mode: 0o100600, nlink: 1},
		{name: "sh", ino: 5, mode: 0o120777, nlink: 1, data: "busybox"},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("entries:\n got %+v\nwant %+v", got, want)
	}
}

type failWriter struct{ n int }

func (f *failWriter) Write(b []byte) (int, error) {
	if f.n < len(b) {
		n := f.n
		f.n = 0
		return n, errors.New("disk full")
	}
	f.n -= len(b)
	return len(b), nil
}

func TestCPIOWriteErrorSticks(t *testing.T) {
	c := NewCPIOWriter(&failWriter{n: 200})
	if err := c.File("a", 0o644, bytes.Repeat([]byte("x"), 100)); err == nil || !strings.Contains(err.Error(), "disk full") {
		t.Fatalf("err = %v, want disk full", err)
	}
	if err := c.Close(); err == nil {
		t.Fatal("Close after a failed write succeeded")
	}
}

// An independent reader, busybox cpio, must list what the writer wrote.
func TestIntegrationBusyboxCpio(t *testing.T) {
	busybox, err := exec.LookPath("busybox")
	if err != nil {
		t.Skip("needs busybox: run e2e/install-deps.sh (apt-get install busybox-static)")
	}
	var buf bytes.Buffer
	c := NewCPIOWriter(&buf)
	for _, err := range []error{
		c.Dir("bin", 0o755),
		c.File("bin/hello", 0o755, []byte("#!/bin/sh\necho hi\n")),
		c.Symlink("bin/sh", "hello"),
		c.Close(),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	cmd := exec.Command(busybox, "cpio", "-i", "-d")
	cmd.Dir = dir
	cmd.Stdin = &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("busybox cpio -i: %v\n%s", err, out)
	}
	data, err := os.ReadFile(filepath.Join(dir, "bin/hello"))
	if err != nil || string(data) != "#!/bin/sh\necho hi\n" {
		t.Errorf("bin/hello = %q, %v", data, err)
	}
	if fi, err := os.Stat(filepath.Join(dir, "bin/hello")); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("bin/hello mode = %v, %v", fi.Mode(), err)
	}
	if target, err := os.Readlink(filepath.Join(dir, "bin/sh")); err != nil || target != "hello" {
		t.Errorf("bin/sh -> %q, %v", target, err)
	}
}
