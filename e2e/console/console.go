// Package console parses the serial console of an end-to-end test guest:
// lines tagged "[name] " by the guest's /init (see e2e/initramfs), the
// guestclient's and the guestwaiter's records and kernel log records copied
// from /dev/kmsg.
//
// Parsers here are pure: the driver reads the console file, these functions
// turn its bytes into values.
package console

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

var tagPattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_.-]*$`)

// ValidTag reports whether name can tag console lines: a letter, then
// letters, digits, '_', '.' and '-'. The kernel's own console lines, which
// start with a timestamp such as "[    1.234567] ", never look tagged.
func ValidTag(name string) bool { return tagPattern.MatchString(name) }

// Line is one complete console line.
type Line struct {
	// Prog is the tag /init put on the line, "" for untagged lines such as
	// the kernel's own console output.
	Prog string
	// Text is the line without the tag and without the line end.
	Text string
}

// String returns the line as the console showed it, without the line end.
func (l Line) String() string {
	if l.Prog == "" {
		return l.Text
	}
	return "[" + l.Prog + "] " + l.Text
}

// Parse splits console output into lines. A last line without a line end is
// left out: the guest may still be writing it. The serial line's "\r\n" and
// stray "\r" are removed.
func Parse(data []byte) []Line {
	end := bytes.LastIndexByte(data, '\n')
	if end < 0 {
		return nil
	}
	var lines []Line
	for _, raw := range strings.Split(string(data[:end]), "\n") {
		text := strings.ReplaceAll(raw, "\r", "")
		l := Line{Text: text}
		if rest, ok := strings.CutPrefix(text, "["); ok {
			if tag, body, ok := strings.Cut(rest, "] "); ok && ValidTag(tag) {
				l = Line{Prog: tag, Text: body}
			}
		}
		lines = append(lines, l)
	}
	return lines
}

// Client is one line of the guestclient.
type Client struct {
	// T is the guest's CLOCK_MONOTONIC just after the line's bytes were
	// drawn: the clock of the provider's bump time (the page's Mono).
	T      time.Duration
	Gen    uint64 // csprng.Generation(), read before the bytes were drawn
	Mode   string // csprng.CurrentMode(): provider, follower or kernel
	CSPRNG string // hex output of the csprng package
	// Control is hex output of a generator that ignores snapshots.
	Control string
}

// ParseClient parses a guestclient line such as
// "T=8123456789 gen=1 mode=provider csprng=00112233 control=44556677".
// Keys it does not know are ignored, so the client can grow fields.
func ParseClient(text string) (Client, error) {
	kv, err := fields("client", text, "T", "gen", "mode", "csprng", "control")
	if err != nil {
		return Client{}, err
	}
	t, err := strconv.ParseInt(kv["T"], 10, 64)
	if err != nil || t < 0 {
		return Client{}, fmt.Errorf("client line %q: bad T: %q", text, kv["T"])
	}
	gen, err := strconv.ParseUint(kv["gen"], 10, 64)
	if err != nil {
		return Client{}, fmt.Errorf("client line %q: bad gen: %w", text, err)
	}
	if !isHex(kv["csprng"]) {
		return Client{}, fmt.Errorf("client line %q: csprng is not hex", text)
	}
	if !isHex(kv["control"]) {
		return Client{}, fmt.Errorf("client line %q: control is not hex", text)
	}
	return Client{T: time.Duration(t), Gen: gen, Mode: kv["mode"], CSPRNG: kv["csprng"], Control: kv["control"]}, nil
}

// fields splits a line of space-separated key=value fields and checks that
// the required keys are there; what names the kind of line in errors.
func fields(what, text string, required ...string) (map[string]string, error) {
	kv := map[string]string{}
	for _, f := range strings.Fields(text) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			return nil, fmt.Errorf("%s line %q: field %q is not key=value", what, text, f)
		}
		kv[k] = v
	}
	for _, k := range required {
		if _, ok := kv[k]; !ok {
			return nil, fmt.Errorf("%s line %q: no %s=", what, text, k)
		}
	}
	return kv, nil
}

func isHex(s string) bool {
	_, err := hex.DecodeString(s)
	return s != "" && err == nil
}

// Kmsg is one kernel log record as /dev/kmsg reads it (see the kernel's
// Documentation/ABI/testing/dev-kmsg).
type Kmsg struct {
	Facility int           // 0 for the kernel's own messages
	Level    int           // 0 (emerg) to 7 (debug)
	Seq      uint64        // the record's sequence number
	Time     time.Duration // since boot, microsecond resolution
	Message  string
}

// ParseKmsg parses a /dev/kmsg record such as
// "5,812,16032345,-;random: crng reseeded due to virtual machine fork".
// Continuation lines (" KEY=value" after a record) are not records and fail.
func ParseKmsg(text string) (Kmsg, error) {
	hdr, msg, ok := strings.Cut(text, ";")
	if !ok {
		return Kmsg{}, fmt.Errorf("kmsg record %q: no ';'", text)
	}
	// prefix,seq,timestamp,flags[,more fields the kernel may add]
	f := strings.Split(hdr, ",")
	if len(f) < 4 {
		return Kmsg{}, fmt.Errorf("kmsg record %q: header has %d fields, want at least 4", text, len(f))
	}
	prefix, err1 := strconv.ParseUint(f[0], 10, 32)
	seq, err2 := strconv.ParseUint(f[1], 10, 64)
	us, err3 := strconv.ParseUint(f[2], 10, 63)
	if err1 != nil || err2 != nil || err3 != nil {
		return Kmsg{}, fmt.Errorf("kmsg record %q: bad header", text)
	}
	return Kmsg{
		Facility: int(prefix >> 3),
		Level:    int(prefix & 7),
		Seq:      seq,
		Time:     time.Duration(us) * time.Microsecond,
		Message:  msg,
	}, nil
}
