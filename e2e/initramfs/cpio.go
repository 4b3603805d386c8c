package initramfs

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
)

// File type bits of a cpio mode (the st_mode values of Linux).
const (
	modeDir     = 0o040000
	modeRegular = 0o100000
	modeSymlink = 0o120000
	modeCharDev = 0o020000
)

// CPIOWriter writes a cpio archive in the "newc" format (magic 070701), the
// format the Linux kernel unpacks as an initramfs: per entry a 110-byte ASCII
// header of hexadecimal fields, the NUL-terminated name and the data, each
// padded to a multiple of four bytes.
//
// The kernel creates entries in archive order and does not create missing
// parent directories, so callers write every directory before its contents.
// Every entry is owned by root and has modification time zero, which keeps
// archives reproducible.
type CPIOWriter struct {
	w   io.Writer
	off int64  // bytes written, for padding
	ino uint32 // last inode number handed out
	err error  // first write error; later calls return it
}

// NewCPIOWriter returns a CPIOWriter that writes to w.
func NewCPIOWriter(w io.Writer) *CPIOWriter { return &CPIOWriter{w: w} }

// Dir writes a directory entry.
func (c *CPIOWriter) Dir(name string, perm fs.FileMode) error {
	return c.entry(name, modeDir|uint32(perm.Perm()), 2, 0, 0, nil)
}

// File writes a regular file with the given contents.
func (c *CPIOWriter) File(name string, perm fs.FileMode, data []byte) error {
	return c.entry(name, modeRegular|uint32(perm.Perm()), 1, 0, 0, data)
}

// Symlink writes a symbolic link to target; newc stores the target as the
// entry's data.
func (c *CPIOWriter) Symlink(name, target string) error {
	return c.entry(name, modeSymlink|0o777, 1, 0, 0, []byte(target))
}

// CharDev writes a character device node with the given device numbers.
func (c *CPIOWriter) CharDev(name string, perm fs.FileMode, major, minor uint32) error {
	return c.entry(name, modeCharDev|uint32(perm.Perm()), 1, major, minor, nil)
}

// Close writes the trailer entry that ends the archive. It does not close
// the underlying writer.
func (c *CPIOWriter) Close() error {
	return c.entry("TRAILER!!!", 0, 1, 0, 0, nil)
}

func (c *CPIOWriter) entry(name string, mode, nlink, rdevMajor, rdevMinor uint32, data []byte) error {
	if c.err != nil {
		return c.err
	}
	if name == "" {
		return errors.New("cpio: empty entry name")
	}
	if uint64(len(data)) > 0xffffffff {
		return fmt.Errorf("cpio: %s: %d bytes do not fit a newc header", name, len(data))
	}
	ino := uint32(0)
	if name != "TRAILER!!!" {
		c.ino++
		ino = c.ino
	}
	// Fields in order: ino, mode, uid, gid, nlink, mtime, filesize, devmajor,
	// devminor, rdevmajor, rdevminor, namesize (with the NUL), check.
	hdr := fmt.Sprintf("070701%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X%08X",
		ino, mode, 0, 0, nlink, 0, len(data), 0, 0, rdevMajor, rdevMinor, len(name)+1, 0)
	c.write([]byte(hdr))
	c.write([]byte(name))
	c.write([]byte{0})
	c.pad()
	c.write(data)
	c.pad()
	if c.err != nil {
		c.err = fmt.Errorf("cpio: writing %s: %w", name, c.err)
	}
	return c.err
}

func (c *CPIOWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(b)
	c.off += int64(n)
	c.err = err
}

var zeros [3]byte

// pad aligns the archive to four bytes.
func (c *CPIOWriter) pad() {
	c.write(zeros[:(4-c.off%4)%4])
}
