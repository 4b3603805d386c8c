package acpi

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

// ForkMessage is the whole text of the record Linux's random driver logs
// when the vmgenid driver reports a VM fork (Linux 5.18 and later):
// add_vmfork_randomness() in drivers/char/random.c calls
// pr_notice("crng reseeded due to virtual machine fork\n"), and the file's
// pr_fmt prepends "random: ".
const ForkMessage = "random: " + forkText

// forkText is the fork record's text after its prefix.
const forkText = "crng reseeded due to virtual machine fork"

// ForkLevel is the level of that record: pr_notice is KERN_NOTICE.
const ForkLevel = 5

// KmsgMatch names one kernel record exactly: a record matches when the
// kernel itself logged it (facility 0), at Level, with Message as its
// whole text (see [Record.Matches]).
type KmsgMatch struct {
	// Level is the record's log level, 0 (emergency) to 7 (debug).
	Level int
	// Message is the record's whole text, as [Record.Message] holds it.
	Message string
}

// ForkRecord is the vmgenid driver's report of a VM fork: the one kernel
// log record that is a restore.
var ForkRecord = KmsgMatch{Level: ForkLevel, Message: ForkMessage}

// String writes m as dmesg -r prints the record: "<5>random: crng ...".
// [ParseKmsgMatch] reads it back.
func (m KmsgMatch) String() string {
	return "<" + strconv.Itoa(m.Level) + ">" + m.Message
}

// ParseKmsgMatch reads a KmsgMatch written as dmesg -r prints a kernel
// record: "<LEVEL>TEXT", LEVEL a single digit 0 to 7 (a kernel record has
// facility 0, so its priority is its level), TEXT the record's whole text,
// not empty. Errors wrap ErrMalformed.
func ParseKmsgMatch(s string) (KmsgMatch, error) {
	if len(s) < 4 || s[0] != '<' || s[1] < '0' || s[1] > '7' || s[2] != '>' {
		return KmsgMatch{}, fmt.Errorf("%w kernel record %q: write it as dmesg -r prints a kernel record, <LEVEL>TEXT with LEVEL 0 to 7 and the whole text", ErrMalformed, s)
	}
	return KmsgMatch{Level: int(s[1] - '0'), Message: s[3:]}, nil
}

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
	// records written to /dev/kmsg by processes (the kernel forces
	// facility 1 on a write whose <prio> prefix has facility 0, or has
	// none, whoever writes).
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

// Matches reports whether r is the record m names: logged by the kernel
// itself (facility 0: a process writing to /dev/kmsg always gets facility 1
// or higher), at m.Level, with exactly m.Message as its text — no prefix,
// no suffix — and no device dictionary (m names a plain printk, not a
// dev_printk). Matching the whole text matters: an unprivileged user can
// make the kernel log a facility-0 record that contains any text, such as
// "tmpfs: Unknown parameter '<text>'" for a mount option in a user
// namespace.
func (r Record) Matches(m KmsgMatch) bool {
	return r.Facility == 0 && r.Level == m.Level && r.Message == m.Message && len(r.Dict) == 0
}

// IsRestore reports whether r is the vmgenid driver's report of a VM fork:
// r.Matches(ForkRecord).
func (r Record) IsRestore() bool {
	return r.Matches(ForkRecord)
}

// isImitation reports whether r holds the fork text but is not the kernel's
// fork record: a copy written to /dev/kmsg, or a kernel record quoting text
// a process chose.
func (r Record) isImitation() bool {
	return !r.IsRestore() && strings.Contains(r.Message, forkText)
}

// KmsgOptions configures a KmsgFollower.
type KmsgOptions struct {
	// Also names a second record that counts as a restore besides
	// ForkRecord, matched just as exactly; the zero value means none.
	// Tests set it to a record root can make the kernel print on demand
	// (the fork record itself still counts).
	Also KmsgMatch
	// Logger receives warnings (records that do not parse); nil means
	// slog.Default().
	Logger *slog.Logger
}

// KmsgFollower reports the kernel log records that announce a restore. It
// reads only records logged after NewKmsgFollower returned: the history is
// never replayed as new events.
type KmsgFollower struct {
	c    conn
	also KmsgMatch
	log  *slog.Logger
	// imitations counts the records ignored by isImitation.
	imitations atomic.Uint64
}

// NewKmsgFollower opens /dev/kmsg positioned after the last record. Reading
// /dev/kmsg needs CAP_SYSLOG when the sysctl kernel.dmesg_restrict is 1.
func NewKmsgFollower(opts KmsgOptions) (*KmsgFollower, error) {
	c, err := openKmsg()
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", kmsgPath, err)
	}
	f := &KmsgFollower{c: c, also: opts.Also, log: opts.Logger}
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
		switch {
		case r.IsRestore() || f.also.Message != "" && r.Matches(f.also):
			emit(Event{Signal: SignalKmsg, Seq: r.Seq, Time: time.Now(),
				Detail: fmt.Sprintf("kernel log record %d: %s", r.Seq, r.Message)})
		case r.isImitation():
			f.imitations.Add(1)
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

// Imitations returns how many records Run has ignored that hold the fork
// text but are not the kernel's fork record (copies written to /dev/kmsg,
// kernel records quoting text a process chose).
func (f *KmsgFollower) Imitations() uint64 {
	return f.imitations.Load()
}

// Close releases /dev/kmsg. It may be called more than once, and makes a
// running Run return an error.
func (f *KmsgFollower) Close() error {
	return f.c.close()
}
