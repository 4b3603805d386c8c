package kernelrng

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Reseed adds fresh input from outside this machine's memory to the
// kernel's pool — entropy credited as such (the host's), extra mixed in
// without credit (the CPU's RNG, which the kernel may already trust or
// not, as random.trust_cpu says) — then forces the CRNG to reseed, so that
// getrandom's output no longer follows from any state a snapshot captured.
// It fails with an error matching ErrNotPermitted without CAP_SYS_ADMIN.
// With neither, it only forces the reseed.
func Reseed(entropy, extra []byte) error {
	f, err := os.OpenFile("/dev/urandom", os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("reseeding the kernel RNG: %w", err)
	}
	defer f.Close()
	if len(extra) > 0 {
		// A write mixes bytes into the pool and credits nothing.
		if _, err := f.Write(extra); err != nil {
			return fmt.Errorf("mixing into the kernel RNG: %w", err)
		}
	}
	if len(entropy) > 0 {
		// struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
		info := make([]byte, 8, 8+len(entropy))
		binary.NativeEndian.PutUint32(info[0:], uint32(8*len(entropy))) // bits credited
		binary.NativeEndian.PutUint32(info[4:], uint32(len(entropy)))
		info = append(info, entropy...)
		if err := ioctl(f, unix.RNDADDENTROPY, info); err != nil {
			return fmt.Errorf("adding entropy to the kernel RNG (RNDADDENTROPY): %w", err)
		}
	}
	if err := ioctl(f, unix.RNDRESEEDCRNG, nil); err != nil {
		return fmt.Errorf("forcing a kernel RNG reseed (RNDRESEEDCRNG): %w", err)
	}
	return nil
}

func ioctl(f *os.File, req uint, arg []byte) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return err
	}
	var errno error
	if err := rc.Control(func(fd uintptr) {
		var e unix.Errno
		if len(arg) > 0 {
			// The conversion stays in the call expression, as unsafe.Pointer's
			// rules for system calls require.
			_, _, e = unix.Syscall(unix.SYS_IOCTL, fd, uintptr(req), uintptr(unsafe.Pointer(&arg[0])))
		} else {
			_, _, e = unix.Syscall(unix.SYS_IOCTL, fd, uintptr(req), 0)
		}
		if e != 0 {
			errno = e
		}
	}); err != nil {
		return err
	}
	if errors.Is(errno, unix.EPERM) {
		return fmt.Errorf("%w: needs CAP_SYS_ADMIN (%v)", ErrNotPermitted, errno)
	}
	return errno
}
