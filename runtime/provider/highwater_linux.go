package provider

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/google/uuid"
	"github.com/snapsafe/snapsafe/runtime/internal/statedir"
	"golang.org/x/sys/unix"
)

// bootIDPath names this boot; it does not change when a VM is restored
// from a snapshot (that is the same boot, going on).
const bootIDPath = "/proc/sys/kernel/random/boot_id"

// openHighWater opens (or creates) the high-water file in dir, mode 0600,
// and reserves its space so that recording a mark never needs space the
// filesystem no longer has.
func openHighWater(dir string) (*highWater, error) {
	path := filepath.Join(dir, statedir.HighWaterFile)
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|unix.O_NOFOLLOW|unix.O_NONBLOCK, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the high-water file: %w", err)
	}
	fail := func(err error) (*highWater, error) {
		f.Close()
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		return fail(fmt.Errorf("checking the high-water file: %w", err))
	}
	if !fi.Mode().IsRegular() {
		return fail(fmt.Errorf("%s is not a regular file: remove it", path))
	}
	if err := f.Chmod(0o600); err != nil {
		return fail(fmt.Errorf("setting the high-water file's mode: %w", err))
	}
	err = unix.Fallocate(int(f.Fd()), 0, 0, hwFileSize)
	if errors.Is(err, unix.EOPNOTSUPP) {
		// Allocate by writing back what is there.
		b := make([]byte, hwFileSize)
		_, _ = f.ReadAt(b, 0)
		_, err = f.WriteAt(b, 0)
	}
	if err != nil {
		return fail(fmt.Errorf("reserving the high-water file in %s: %w", dir, err))
	}
	h := &highWater{f: f}
	if b, err := os.ReadFile(bootIDPath); err == nil {
		if id, err := uuid.Parse(strings.TrimSpace(string(b))); err == nil {
			h.boot = id
		}
	}
	return h, nil
}

// sync makes the record durable: the file's size never changes (its space
// is reserved), so its data is all there is to sync.
func (h *highWater) sync() error { return unix.Fdatasync(int(h.f.Fd())) }

// spaceHint says what to do about an error caused by a full filesystem.
func spaceHint(err error) error {
	if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.EDQUOT) {
		return fmt.Errorf("%w: free space or use another --dir", err)
	}
	return err
}
