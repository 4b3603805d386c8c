package shm

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

func TestRegionSharedAndSealed(t *testing.T) {
	prov, err := NewRegion(100)
	if err != nil {
		t.Fatal(err)
	}
	defer prov.Close()
	if n := len(prov.Bytes()); n != os.Getpagesize() {
		t.Fatalf("region of 100 bytes has %d, want one page", n)
	}
	// The client gets its own descriptor, as SCM_RIGHTS would give it.
	fd, err := unix.Dup(int(prov.File().Fd()))
	if err != nil {
		t.Fatal(err)
	}
	cli, err := MapRegion(os.NewFile(uintptr(fd), "region"))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()

	copy(cli.Bytes(), "secret key")
	if string(prov.Bytes()[:10]) != "secret key" {
		t.Fatal("provider does not see the client's write")
	}
	prov.Wipe()
	for i, b := range cli.Bytes() {
		if b != 0 {
			t.Fatalf("byte %d = %#x after wipe", i, b)
		}
	}
	// Neither side can resize the memfd, so neither mapping can fault.
	if err := cli.File().Truncate(0); err == nil {
		t.Fatal("client could shrink a sealed region")
	}
	if err := cli.File().Truncate(1 << 20); err == nil {
		t.Fatal("client could grow a sealed region")
	}
	if err := cli.Close(); err != nil {
		t.Fatal(err)
	}
	if err := cli.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestRegionBounds(t *testing.T) {
	for _, n := range []int{0, -1, MaxRegionSize + 1} {
		if r, err := NewRegion(n); err == nil {
			r.Close()
			t.Errorf("NewRegion(%d) succeeded", n)
		}
	}
	r, err := NewRegion(MaxRegionSize)
	if err != nil {
		t.Fatal(err)
	}
	r.Close()
}

func TestMapRegionRejectsUnsealed(t *testing.T) {
	fd, err := unix.MemfdCreate("unsealed", unix.MFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), "unsealed")
	defer f.Close()
	if err := f.Truncate(4096); err != nil {
		t.Fatal(err)
	}
	if r, err := MapRegion(f); err == nil {
		r.Close()
		t.Fatal("MapRegion accepted an unsealed memfd")
	}
}
