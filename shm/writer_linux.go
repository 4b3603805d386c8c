package shm

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// pageSeals are the seals of the page memfd: its size is fixed, so no
// mapping of it can fault, and once the provider has mapped it nobody can
// write it or map it writable (F_SEAL_FUTURE_WRITE), nor change the seals.
const pageSeals = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_FUTURE_WRITE | unix.F_SEAL_SEAL

// requiredSeals are the seals a client insists on before it maps the page
// memfd: without them another process could make the mapping fault or
// write to it.
const requiredSeals = unix.F_SEAL_SHRINK | unix.F_SEAL_GROW | unix.F_SEAL_FUTURE_WRITE

// OpenWriter makes the sealed memfd that is the generation page and keeps
// the page file at path as a copy of it. The file's earlier contents, if
// they form a valid page, seed the memfd (Prior reports the generation);
// the file is read with pread, never through a mapping, so its state
// cannot crash the caller. An existing regular file keeps its inode, so
// that readers that have it mapped keep seeing the page; anything else at
// path is replaced. Space for the file is reserved (fallocate) before it is
// mapped: on a full filesystem OpenWriter fails with an error matching
// ENOSPC rather than fault later.
func OpenWriter(path string) (*Writer, error) {
	dirPath, name := filepath.Dir(path), filepath.Base(path)
	dir, err := os.OpenFile(dirPath, os.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, fmt.Errorf("opening the state directory: %w", err)
	}
	w := &Writer{dir: dir, name: name}
	if w.memfd, w.mv.mem, err = newPageMemfd(); err != nil {
		dir.Close()
		return nil, err
	}
	if old, ok := w.readFile(name); ok {
		copy(w.mv.mem, old)
		w.prior, w.valid = w.Generation(), true
	} else {
		w.mv.initHeader()
	}
	fc, err := w.openFile()
	if err != nil {
		w.Close()
		return nil, err
	}
	w.files = []*fileCopy{fc}
	return w, nil
}

// newPageMemfd creates the page memfd, reserves its memory, seals its size,
// maps it read-write and then seals it against every other writer.
func newPageMemfd() (*os.File, []byte, error) {
	fd, err := unix.MemfdCreate("snapsafe-page", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING|unix.MFD_NOEXEC_SEAL)
	if errors.Is(err, unix.EINVAL) { // before Linux 6.3: no MFD_NOEXEC_SEAL
		fd, err = unix.MemfdCreate("snapsafe-page", unix.MFD_CLOEXEC|unix.MFD_ALLOW_SEALING)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("creating the generation page memfd: %w", err)
	}
	f := os.NewFile(uintptr(fd), "snapsafe-page")
	fail := func(what string, err error) (*os.File, []byte, error) {
		f.Close()
		return nil, nil, fmt.Errorf("%s the generation page memfd: %w", what, err)
	}
	if err := unix.Ftruncate(fd, PageSize); err != nil {
		return fail("sizing", err)
	}
	if err := unix.Fallocate(fd, 0, 0, PageSize); err != nil {
		return fail("reserving memory for", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, unix.F_SEAL_SHRINK|unix.F_SEAL_GROW); err != nil {
		return fail("sealing", err)
	}
	mem, err := unix.Mmap(fd, 0, PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail("mapping", err)
	}
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_ADD_SEALS, pageSeals&^(unix.F_SEAL_SHRINK|unix.F_SEAL_GROW)); err != nil {
		_ = unix.Munmap(mem)
		return fail("sealing", err)
	}
	return f, mem, nil
}

// readFile reads the page file name with pread and returns its bytes if
// they form a valid page.
func (w *Writer) readFile(name string) ([]byte, bool) {
	f, err := w.openat(name, unix.O_RDONLY)
	if err != nil {
		return nil, false
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, false
	}
	b := make([]byte, PageSize)
	n, _ := f.ReadAt(b, 0)
	if (view{mem: b[:n]}).check() != nil {
		return nil, false
	}
	return b, true
}

// openat opens name in the state directory without following a symlink,
// without blocking on a FIFO, close-on-exec.
func (w *Writer) openat(name string, flags int) (*os.File, error) {
	path := filepath.Join(w.dir.Name(), name)
	fd, err := unix.Openat(int(w.dir.Fd()), name, flags|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0o444)
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: path, Err: err}
	}
	return os.NewFile(uintptr(fd), path), nil
}

func (w *Writer) path() string { return filepath.Join(w.dir.Name(), w.name) }

// openFile maps the page file that is there, keeping its inode, or makes a
// new one if what is there is not a regular file.
func (w *Writer) openFile() (*fileCopy, error) {
	f, err := w.openat(w.name, unix.O_RDWR)
	if errors.Is(err, fs.ErrPermission) {
		// A non-root owner cannot open its own 0444 page for writing: make
		// it writable for the owner for the moment of the open (through a
		// read-only descriptor, so that no symlink is followed).
		f, err = w.reopenWritable()
	}
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, unix.ELOOP):
		return w.newFile() // nothing there, or a symlink
	case errors.Is(err, unix.EISDIR):
		return nil, fmt.Errorf("the generation page %s is a directory: remove it", w.path())
	case err != nil:
		return nil, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, fmt.Errorf("checking the generation page file: %w", err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		f.Close()
		return w.newFile() // a FIFO, a socket, a device: replace it
	}
	if st.Nlink != 1 || st.Uid != uint32(os.Geteuid()) {
		// A hard link to a file elsewhere, or someone else's file: writing
		// it would change that file. Replace the name, never the file.
		f.Close()
		return w.newFile()
	}
	fc, err := w.mapFile(f, &st)
	if err != nil {
		return nil, err
	}
	// Reinitialise a page that was invalid (nobody can rely on it). If the
	// file is truncated meanwhile, the first Check reports it.
	if !w.valid && !guard(func() { fc.v.copyFrom(w.mv) }) {
		fc.bad = true
	}
	return fc, nil
}

// reopenWritable opens the page file read-write although its mode is 0444.
func (w *Writer) reopenWritable() (*os.File, error) {
	ro, err := w.openat(w.name, unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer ro.Close()
	if err := ro.Chmod(0o644); err != nil {
		return nil, fmt.Errorf("making the generation page file writable: %w", err)
	}
	rw, err := w.openat(w.name, unix.O_RDWR)
	_ = ro.Chmod(0o444) // mapFile sets it again on the file it maps
	if err != nil {
		return nil, err
	}
	if !sameFile(ro, rw) {
		rw.Close()
		return nil, fmt.Errorf("the generation page file %s was replaced while being opened: try again", w.path())
	}
	return rw, nil
}

func sameFile(a, b *os.File) bool {
	var sa, sb unix.Stat_t
	return unix.Fstat(int(a.Fd()), &sa) == nil && unix.Fstat(int(b.Fd()), &sb) == nil &&
		sa.Dev == sb.Dev && sa.Ino == sb.Ino
}

// mapFile reserves the file's page, makes it 0444 and exactly PageSize
// bytes, and maps it read-write. It takes ownership of f.
func (w *Writer) mapFile(f *os.File, st *unix.Stat_t) (*fileCopy, error) {
	fail := func(err error) (*fileCopy, error) {
		f.Close()
		return nil, err
	}
	if err := f.Chmod(0o444); err != nil {
		return fail(fmt.Errorf("setting the generation page file's mode: %w", err))
	}
	if err := reserve(f, st.Size); err != nil {
		return fail(fmt.Errorf("reserving the generation page in %s: %w", w.dir.Name(), err))
	}
	if st.Size > PageSize {
		if err := f.Truncate(PageSize); err != nil {
			return fail(fmt.Errorf("sizing the generation page file: %w", err))
		}
	}
	mem, err := unix.Mmap(int(f.Fd()), 0, PageSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		return fail(fmt.Errorf("mapping the generation page file: %w", err))
	}
	return &fileCopy{f: f, v: view{mem: mem}, dev: uint64(st.Dev), ino: st.Ino}, nil
}

// reserve allocates the blocks of the file's first PageSize bytes (and
// extends it to PageSize if it is shorter), so that stores to a mapping of
// it never need space the filesystem no longer has. On a filesystem without
// fallocate it writes the bytes that are there back, which allocates them.
func reserve(f *os.File, size int64) error {
	err := unix.Fallocate(int(f.Fd()), 0, 0, PageSize)
	if !errors.Is(err, unix.EOPNOTSUPP) {
		return err
	}
	b := make([]byte, PageSize)
	_, _ = f.ReadAt(b[:min(size, PageSize)], 0)
	_, err = f.WriteAt(b, 0)
	return err
}

// newFile writes a fresh copy of the page to a temporary file and renames
// it over whatever is at the page file's name, atomically: a reader that
// opens the name finds either the old file or a complete new page.
func (w *Writer) newFile() (*fileCopy, error) {
	tmp := w.name + ".new"
	dirfd := int(w.dir.Fd())
	_ = unix.Unlinkat(dirfd, tmp, 0) // left by a provider that died here
	f, err := w.openat(tmp, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL)
	if err != nil {
		return nil, fmt.Errorf("creating the generation page file: %w: remove it", err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		_ = unix.Unlinkat(dirfd, tmp, 0)
		return nil, fmt.Errorf("checking the generation page file: %w", err)
	}
	fc, err := w.mapFile(f, &st)
	if err != nil {
		_ = unix.Unlinkat(dirfd, tmp, 0)
		return nil, err
	}
	if !guard(func() { fc.v.copyFrom(w.mv) }) {
		fc.close()
		_ = unix.Unlinkat(dirfd, tmp, 0)
		return nil, fmt.Errorf("the new generation page file %s was truncated while being written: try again", filepath.Join(w.dir.Name(), tmp))
	}
	if err := unix.Renameat(dirfd, tmp, dirfd, w.name); err != nil {
		fc.close()
		_ = unix.Unlinkat(dirfd, tmp, 0)
		return nil, fmt.Errorf("republishing the generation page as %s: %w: remove what is there", w.path(), err)
	}
	return fc, nil
}

func (fc *fileCopy) close() {
	_ = unix.Munmap(fc.v.mem)
	fc.f.Close()
}

// Check compares the page file with the page: it reports a file that was
// truncated or resized, overwritten, given another mode, deleted, or
// replaced by something else, and the highest generation such a file
// showed its readers. It never faults, whatever happens to the file.
func (w *Writer) Check() Damage {
	w.mu.Lock()
	defer w.mu.Unlock()
	var d Damage
	if len(w.files) == 0 {
		return Damage{Problem: "the writer is closed"}
	}
	problem := func(format string, args ...any) {
		if d.Problem != "" {
			d.Problem += "; "
		}
		d.Problem += fmt.Sprintf(format, args...)
	}
	fc := w.files[0]
	if fc == nil {
		problem("missing")
	} else {
		var st unix.Stat_t
		if err := unix.Fstat(int(fc.f.Fd()), &st); err != nil {
			problem("cannot be checked: %v", err)
		}
		switch {
		case st.Size != PageSize:
			problem("resized to %d bytes", st.Size)
		case fc.bad:
			problem("truncated while being written")
		default:
			var g uint64
			if !guard(func() { copy(w.scratch[:], fc.v.mem) }) {
				problem("truncated while being checked")
			} else if g = binary.LittleEndian.Uint64(w.scratch[OffGeneration:]); !w.sameAsPage(w.scratch[:]) {
				problem("overwritten")
				d.Seen = g
			}
		}
		if st.Size >= OffGeneration+8 && (st.Size != PageSize || fc.bad) {
			d.Seen = max(d.Seen, preadGeneration(fc.f))
		}
		if m := st.Mode & 0o7777; m != 0o444 {
			problem("mode changed to %#o", m)
		}
		if st.Nlink == 0 {
			problem("deleted")
		}
	}
	var st unix.Stat_t
	err := unix.Fstatat(int(w.dir.Fd()), w.name, &st, unix.AT_SYMLINK_NOFOLLOW)
	switch {
	case errors.Is(err, unix.ENOENT):
		if fc != nil && !strings.Contains(d.Problem, "deleted") {
			problem("deleted")
		}
	case err != nil:
		problem("cannot be checked: %v", err)
	case fc == nil || uint64(st.Dev) != fc.dev || st.Ino != fc.ino:
		problem("replaced by %s", fileType(st.Mode))
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			if f, err := w.openat(w.name, unix.O_RDONLY); err == nil {
				d.Seen = max(d.Seen, preadGeneration(f))
				f.Close()
			}
		}
	}
	return d
}

// sameAsPage reports whether b, a copy of a page file, shows exactly the
// page, but for the sequence word (each file has a sequence of its own):
// outside a write section like the page (whose sequence stays odd only if
// a provider died writing it, until the next publish).
func (w *Writer) sameAsPage(b []byte) bool {
	return binary.LittleEndian.Uint64(b[OffSeq:])&1 == binary.LittleEndian.Uint64(w.mv.mem[OffSeq:])&1 &&
		bytes.Equal(b[:OffSeq], w.mv.mem[:OffSeq]) && bytes.Equal(b[OffSeq+8:], w.mv.mem[OffSeq+8:PageSize])
}

// preadGeneration reads the word at OffGeneration of f, 0 if there is none.
func preadGeneration(f *os.File) uint64 {
	var b [8]byte
	if n, _ := f.ReadAt(b[:], OffGeneration); n != len(b) {
		return 0
	}
	return binary.LittleEndian.Uint64(b[:])
}

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "another file"
	case unix.S_IFDIR:
		return "a directory"
	case unix.S_IFLNK:
		return "a symlink"
	case unix.S_IFIFO:
		return "a FIFO"
	case unix.S_IFSOCK:
		return "a socket"
	}
	return "a device"
}

// Repair makes the page file an intact copy of the page again: in place
// when the Writer's inode is still the file at the page file's name (it
// restores the size, reserving the space first, the mode and the contents,
// so that readers that have it mapped recover), else by renaming a fresh
// copy over the name. An inode that was replaced is kept up to date, for
// the readers that still map it (up to a few of them). Repair never
// writes through a symlink.
func (w *Writer) Repair() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.dir == nil {
		return errors.New("the generation page writer is closed")
	}
	if fc := w.files[0]; fc != nil && w.atName(fc) {
		return w.repairInPlace(fc)
	}
	fc, err := w.newFile()
	if err != nil {
		return err
	}
	files := []*fileCopy{fc}
	for _, old := range w.files {
		switch {
		case old == nil:
		case old.bad || len(files) > maxOrphans:
			old.close()
		default:
			files = append(files, old)
		}
	}
	w.files = files
	return nil
}

// atName reports whether fc's inode is the one at the page file's name.
func (w *Writer) atName(fc *fileCopy) bool {
	var st unix.Stat_t
	return unix.Fstatat(int(w.dir.Fd()), w.name, &st, unix.AT_SYMLINK_NOFOLLOW) == nil &&
		uint64(st.Dev) == fc.dev && st.Ino == fc.ino && st.Nlink > 0
}

func (w *Writer) repairInPlace(fc *fileCopy) error {
	var st unix.Stat_t
	if err := unix.Fstat(int(fc.f.Fd()), &st); err != nil {
		return fmt.Errorf("checking the generation page file: %w", err)
	}
	if st.Mode&0o7777 != 0o444 {
		if err := fc.f.Chmod(0o444); err != nil {
			return fmt.Errorf("setting the generation page file's mode: %w", err)
		}
	}
	// Reserve (and so extend) first: on tmpfs even a read fault on a page
	// that has no memory behind it needs space.
	if err := reserve(fc.f, st.Size); err != nil {
		return fmt.Errorf("reserving the generation page in %s: %w", w.dir.Name(), err)
	}
	if st.Size > PageSize {
		if err := fc.f.Truncate(PageSize); err != nil {
			return fmt.Errorf("sizing the generation page file: %w", err)
		}
	}
	fc.bad = false
	if !guard(func() { fc.v.copyFrom(w.mv) }) {
		fc.bad = true
		return fmt.Errorf("the generation page file %s was truncated again while being repaired", w.path())
	}
	return nil
}

// Dup returns a new descriptor (close-on-exec) for the page memfd, to pass
// to a client: see MapPageMemfd.
func (w *Writer) Dup() (*os.File, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.memfd == nil {
		return nil, errors.New("the generation page writer is closed")
	}
	fd, err := unix.FcntlInt(w.memfd.Fd(), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("duplicating the generation page descriptor: %w", err)
	}
	return os.NewFile(uintptr(fd), w.memfd.Name()), nil
}

// Close unmaps the page and the page files and closes their descriptors.
// It is idempotent. Clients keep their mappings of the memfd.
func (w *Writer) Close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, fc := range w.files {
		if fc != nil {
			fc.close()
		}
	}
	w.files = nil
	var err error
	if w.mv.mem != nil {
		err = unix.Munmap(w.mv.mem)
		w.mv.mem = nil
	}
	if w.memfd != nil {
		err = errors.Join(err, w.memfd.Close())
		w.memfd = nil
	}
	if w.dir != nil {
		err = errors.Join(err, w.dir.Close())
		w.dir = nil
	}
	return err
}
