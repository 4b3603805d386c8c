package provider

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"os"
)

// The high-water file keeps the last generation the provider published,
// where no accident to the page file reaches it: a file of its own, mode
// 0600, in the state directory. It is written (and synced) before each new
// generation is published, so after a crash it is never below what any
// client saw; at start the provider resumes above the higher of it and the
// page file. It only counts within the boot that wrote it (a state
// directory on a disk outlives a reboot, and so would a stale mark).
//
// It holds two 64-byte slots, written alternately, so that a write torn by
// a crash leaves the other slot — the previous mark — intact:
//
//	offset  0  [8]byte  "SNSFHWM1"
//	offset  8  uint64   generation (little-endian)
//	offset 16  [16]byte boot id (/proc/sys/kernel/random/boot_id)
//	offset 32  [28]byte zero
//	offset 60  uint32   CRC-32C of bytes 0 to 59 (little-endian)
//
// It is the provider's private state, not part of the ABI.
const (
	hwSlotSize = 64
	hwFileSize = 2 * hwSlotSize
	hwMagic    = "SNSFHWM1"
)

var hwTable = crc32.MakeTable(crc32.Castagnoli)

type highWater struct {
	f    *os.File
	boot [16]byte
	next int64 // offset of the slot the next record goes to
}

// hwState says what load found.
type hwState int

const (
	hwAbsent    hwState = iota // an empty file: no provider recorded anything
	hwThisBoot                 // a valid mark of this boot
	hwOtherBoot                // valid marks, all of other boots
	hwCorrupt                  // neither slot is valid
)

func encodeHighWater(g uint64, boot [16]byte) []byte {
	b := make([]byte, hwSlotSize)
	copy(b, hwMagic)
	binary.LittleEndian.PutUint64(b[8:], g)
	copy(b[16:], boot[:])
	binary.LittleEndian.PutUint32(b[60:], crc32.Checksum(b[:60], hwTable))
	return b
}

func decodeHighWater(b []byte) (g uint64, boot [16]byte, ok bool) {
	if len(b) != hwSlotSize || !bytes.Equal(b[:8], []byte(hwMagic)) ||
		binary.LittleEndian.Uint32(b[60:]) != crc32.Checksum(b[:60], hwTable) {
		return 0, boot, false
	}
	copy(boot[:], b[16:32])
	return binary.LittleEndian.Uint64(b[8:]), boot, true
}

// load returns the highest mark of this boot, and arranges for the next
// record to overwrite the other slot.
func (h *highWater) load() (uint64, hwState) {
	b := make([]byte, hwFileSize)
	n, _ := h.f.ReadAt(b, 0)
	if bytes.Count(b[:n], []byte{0}) == n {
		return 0, hwAbsent // new, or reserved but never written
	}
	var best uint64
	state := hwCorrupt
	for off := int64(0); off < hwFileSize; off += hwSlotSize {
		g, boot, ok := decodeHighWater(b[off : off+hwSlotSize])
		switch {
		case !ok:
		case boot != h.boot:
			if state == hwCorrupt {
				state = hwOtherBoot
			}
		case state != hwThisBoot || g > best:
			best, state = g, hwThisBoot
			h.next = hwSlotSize - off
		}
	}
	return best, state
}

// record writes g as the new mark and syncs it to the file.
func (h *highWater) record(g uint64) error {
	if _, err := h.f.WriteAt(encodeHighWater(g, h.boot), h.next); err != nil {
		return fmt.Errorf("writing the high-water file: %w", err)
	}
	if err := h.sync(); err != nil {
		return fmt.Errorf("syncing the high-water file: %w", err)
	}
	h.next = hwSlotSize - h.next
	return nil
}

func (h *highWater) Close() error { return h.f.Close() }
