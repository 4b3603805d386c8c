package acpi

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
)

// ForkMessage is the text Linux's random driver logs, with facility 0, when
// the vmgenid driver reports a VM fork (Linux 5.18 and later). The record
// reads "random: crng reseeded due to virtual machine fork".
const ForkMessage = "crng reseeded due to virtual machine fork"

// kmsgPath is the kernel log device.
const kmsgPath = "/dev/kmsg"

// kmsgMaxRecord is the size of the buffer a record is read into. The kernel
// formats each record into at most 8 KiB and fails read(2) with EINVAL when
// the buffer is too small for the next record.
const kmsgMaxRecord = 8192

// Record is one record of the kernel log as /dev/kmsg presents it:
//
//	prio,seq,usec,flags[,...];message
//	 KEY=VALUE
//
// The optional continuation lines carry the record's device dictionary (such
// as SUBSYSTEM and DEVICE).
type Record struct {
	// Facility is prio>>3: 0 for the kernel itself, 1 (user) or more for
	// records written to /dev/kmsg by processes.
	Facility int
	// Level is prio&7, the log level (0 emergency ... 7 debug).
	Level int
	// Seq is the record's sequence number; the kernel numbers records
	// from 0 at boot without gaps.
	Seq uint64
	// Usec is the time the record was logged, in microseconds since boot.
	Usec uint64
	// Flags is the header's flags field: "-", or "c" for a record that
	// continues a previous one.
	Flags string
	// Message is the text, with the kernel's \xNN escapes decoded.
	Message string
	// Dict holds the continuation lines' KEY=VALUE pairs, decoded like
	// Message; nil when there are none.
	Dict map[string]string
}

// ParseKmsg parses one record read from /dev/kmsg: a single read(2) returns
// exactly one record, ending in a newline. Header fields after flags (newer
// kernels may add some, such as caller=) are ignored. Errors wrap
// ErrMalformed.
func ParseKmsg(rec []byte) (Record, error) {
	s, ok := strings.CutSuffix(string(rec), "\n")
	if !ok {
		return Record{}, fmt.Errorf("%w kmsg record: no trailing newline (truncated?): %q", ErrMalformed, rec)
	}
	head, body, ok := strings.Cut(s, ";")
	if !ok {
		return Record{}, fmt.Errorf("%w kmsg record: no ';' after the header: %q", ErrMalformed, rec)
	}
	fields := strings.Split(head, ",")
	if len(fields) < 4 {
		return Record{}, fmt.Errorf("%w kmsg record: header %q has %d fields, want prio,seq,usec,flags", ErrMalformed, head, len(fields))
	}
	prio, err := strconv.ParseUint(fields[0], 10, 16)
	if err != nil {
		return Record{}, fmt.Errorf("%w kmsg record: priority %q: %w", ErrMalformed, fields[0], err)
	}
	r := Record{Facility: int(prio >> 3), Level: int(prio & 7), Flags: fields[3]}
	if r.Seq, err = strconv.ParseUint(fields[1], 10, 64); err != nil {
		return Record{}, fmt.Errorf("%w kmsg record: sequence number %q: %w", ErrMalformed, fields[1], err)
	}
	if r.Usec, err = strconv.ParseUint(fields[2], 10, 64); err != nil {
		return Record{}, fmt.Errorf("%w kmsg record: timestamp %q: %w", ErrMalformed, fields[2], err)
	}
	lines := strings.Split(body, "\n")
	r.Message = unescapeKmsg(lines[0])
	for _, line := range lines[1:] {
		kv, ok := strings.CutPrefix(line, " ")
		k, v, hasEq := strings.Cut(kv, "=")
		if !ok || !hasEq || k == "" {
			return Record{}, fmt.Errorf("%w kmsg record: continuation line %q is not \" KEY=VALUE\"", ErrMalformed, line)
		}
		if r.Dict == nil {
			r.Dict = make(map[string]string)
		}
		r.Dict[k] = unescapeKmsg(v)
	}
	return r, nil
}

// unescapeKmsg decodes the \xNN escapes with which the kernel writes control
// characters, bytes of 127 and above, and the backslash itself. Anything else
// is kept as it is.
func unescapeKmsg(s string) string {
	if !strings.Contains(s, `\x`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && s[i+1] == 'x' {
			if v, err := strconv.ParseUint(s[i+2:i+4], 16, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// IsRestore reports whether r is a kernel record (facility 0) whose message
// contains match. With match = ForkMessage it recognises the vmgenid
// driver's report of a VM fork, which no process can forge.
func (r Record) IsRestore(match string) bool {
	return r.Facility == 0 && strings.Contains(r.Message, match)
}

// KmsgOptions configures a KmsgFollower.
type KmsgOptions struct {
	// Match is the text a facility-0 record must contain to count as a
	// restore; empty means ForkMessage. Tests set it to the text of
	// another kernel record they can cause.
	Match string
	// Logger receives warnings (records that do not parse); nil means
	// slog.Default().
	Logger *slog.Logger
}

// KmsgFollower reports the kernel log records that announce a restore. It
// reads only records logged after NewKmsgFollower returned: the history is
// never replayed as new events.
type KmsgFollower struct {
	c     conn
	match string
	log   *slog.Logger
}

// NewKmsgFollower opens /dev/kmsg positioned after the last record. Reading
// /dev/kmsg needs CAP_SYSLOG when the sysctl kernel.dmesg_restrict is 1.
func NewKmsgFollower(opts KmsgOptions) (*KmsgFollower, error) {
	c, err := openKmsg()
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", kmsgPath, err)
	}
	f := &KmsgFollower{c: c, match: opts.Match, log: opts.Logger}
	if f.match == "" {
		f.match = ForkMessage
	}
	if f.log == nil {
		f.log = slog.Default()
	}
	return f, nil
}

// Run reports each restore record, and each loss of records, with emit until
// ctx is done; then it returns nil. emit is called from Run's goroutine. Run
// must not be called concurrently with itself.
func (f *KmsgFollower) Run(ctx context.Context, emit func(Event)) error {
	err := follow(ctx, f.c, kmsgMaxRecord, func(msg []byte, _ uint32) {
		r, err := ParseKmsg(msg)
		if err != nil {
			f.log.Warn("ignoring kernel log record", "err", err)
			return
		}
		if r.IsRestore(f.match) {
			emit(Event{Signal: SignalKmsg, Seq: r.Seq, Time: time.Now(),
				Detail: fmt.Sprintf("kernel log record %d: %s", r.Seq, r.Message)})
		}
	}, func() {
		emit(Event{Signal: SignalKmsg, Lost: true, Time: time.Now(),
			Detail: "kernel log records were overwritten before they were read"})
	})
	if err != nil {
		return fmt.Errorf("reading %s: %w", kmsgPath, err)
	}
	return nil
}

// Close releases /dev/kmsg. It may be called more than once, and makes a
// running Run return an error.
func (f *KmsgFollower) Close() error {
	return f.c.close()
}
