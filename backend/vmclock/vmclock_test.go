package vmclock

import (
	"encoding/binary"
	"strings"
	"testing"
	"unsafe"
)

const testPageSize = 4096

// aligned copies b into 8-byte aligned memory, as a mapping would be.
func aligned(b []byte) layout {
	words := make([]uint64, (len(b)+7)/8)
	l := unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(words))), len(b))
	copy(l, b)
	return l
}

func TestHeader(t *testing.T) {
	set32 := func(off int, v uint32) func([]byte) {
		return func(b []byte) { binary.LittleEndian.PutUint32(b[off:], v) }
	}
	tests := []struct {
		name    string
		edit    func([]byte)
		len     int
		wantErr string
	}{
		{name: "page", len: testPageSize},
		{name: "just the fields we read", edit: set32(OffSize, MinSize), len: MinSize},
		{name: "bad magic", edit: set32(OffMagic, 0x4b4c4357), len: testPageSize, wantErr: "bad magic 0x4b4c4357"},
		{name: "version 2", edit: func(b []byte) { binary.LittleEndian.PutUint16(b[OffVersion:], 2) }, len: testPageSize, wantErr: "unsupported VMClock version 2"},
		{name: "declared size too small", edit: set32(OffSize, OffCounter), len: testPageSize, wantErr: "declares 104 bytes"},
		{name: "buffer too short", len: MinSize - 1, wantErr: "too short"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := Page(testPageSize, FlagCounter, 1)
			if tt.edit != nil {
				tt.edit(b)
			}
			h, err := aligned(b[:tt.len]).header()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("header() error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := header{size: binary.LittleEndian.Uint32(b[OffSize:]), version: 1}
			if h != want {
				t.Fatalf("header() = %+v, want %+v", h, want)
			}
		})
	}
}

func TestTryRead(t *testing.T) {
	l := aligned(Page(testPageSize, FlagCounter|FlagNotify, 0x0123456789abcdef))
	s, ok := l.tryRead()
	want := snapshot{magic: Magic, flags: FlagCounter | FlagNotify, counter: 0x0123456789abcdef}
	if !ok || s != want {
		t.Fatalf("tryRead() = %+v, %v; want %+v, true", s, ok, want)
	}
	binary.LittleEndian.PutUint32(l[OffSeq:], 7) // the hypervisor is mid-update
	if _, ok := l.tryRead(); ok {
		t.Fatal("tryRead() succeeded while seq_count is odd")
	}
}
