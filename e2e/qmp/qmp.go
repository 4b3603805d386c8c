// Package qmp is a small client for the QEMU Machine Protocol: it connects to
// a QMP socket, negotiates capabilities, executes commands one at a time and
// collects the asynchronous events QEMU sends in between.
//
// It is the end-to-end harness's remote control for QEMU and deliberately
// covers only what the harness needs; see QEMU's docs/interop/qmp-spec for the
// protocol.
package qmp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// ErrClosed is returned (wrapped) by Execute when the connection to QEMU is
// closed or broken, for example because QEMU exited.
var ErrClosed = errors.New("qmp connection closed")

// Error is a command failure reported by QEMU. Match it with errors.As.
type Error struct {
	Command string // the command that failed
	Class   string // QEMU's error class, such as "GenericError"
	Desc    string // QEMU's human-readable description
}

// Error formats the failure as "qmp COMMAND: CLASS: DESC".
func (e *Error) Error() string {
	return fmt.Sprintf("qmp %s: %s: %s", e.Command, e.Class, e.Desc)
}

// Event is an asynchronous QMP event such as STOP, RESUME or SHUTDOWN.
type Event struct {
	Name string
	Data json.RawMessage
	// Time is QEMU's timestamp of the event (host wall clock).
	Time time.Time
}

// Greeting is what QEMU announces when a client connects.
type Greeting struct {
	Version struct {
		QEMU struct {
			Major int `json:"major"`
			Minor int `json:"minor"`
			Micro int `json:"micro"`
		} `json:"qemu"`
		Package string `json:"package"`
	} `json:"version"`
	Capabilities []string `json:"capabilities"`
}

// message is any JSON object QEMU sends: the greeting, a command response or
// an event. Which one it is follows from the fields present.
type message struct {
	QMP       *Greeting       `json:"QMP"`
	Return    json.RawMessage `json:"return"`
	Error     *qmpError       `json:"error"`
	ID        *uint64         `json:"id"`
	Event     string          `json:"event"`
	Data      json.RawMessage `json:"data"`
	Timestamp *eventTimestamp `json:"timestamp"`
}

type qmpError struct {
	Class string `json:"class"`
	Desc  string `json:"desc"`
}

type eventTimestamp struct {
	Seconds      int64 `json:"seconds"`
	Microseconds int64 `json:"microseconds"`
}

type request struct {
	Execute   string `json:"execute"`
	Arguments any    `json:"arguments,omitempty"`
	ID        uint64 `json:"id"`
}

// Client is a QMP connection. Its methods are safe for concurrent use;
// commands are executed one at a time, in the order callers obtain the lock.
type Client struct {
	conn     net.Conn
	greeting Greeting

	exec   sync.Mutex // serialises Execute: QMP answers commands in order
	nextID uint64     // guarded by exec

	mu      sync.Mutex
	waitID  uint64       // id of the command Execute waits for
	waitCh  chan message // nil when no command is outstanding
	events  []Event
	readErr error

	done chan struct{} // closed when the reader stops; readErr is then set
}

// Dial connects to the QMP unix socket at path, reads QEMU's greeting and
// leaves capabilities negotiation mode, so that commands can be executed.
func Dial(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("connecting to qmp socket %s: %w", path, err)
	}
	c, err := NewClient(ctx, conn)
	if err != nil {
		conn.Close()
		return nil, err
	}
	return c, nil
}

// NewClient runs the QMP handshake over an established connection: it reads
// the greeting and executes qmp_capabilities. The Client owns conn from then
// on, also when NewClient fails.
func NewClient(ctx context.Context, conn net.Conn) (*Client, error) {
	dec := json.NewDecoder(conn)
	// The greeting is read before the reader goroutine starts, so a peer that
	// is not QEMU fails here with a clear error instead of hanging a command.
	stop := context.AfterFunc(ctx, func() { conn.SetReadDeadline(time.Unix(1, 0)) })
	var m message
	err := dec.Decode(&m)
	if !stop() {
		conn.Close()
		return nil, fmt.Errorf("reading qmp greeting: %w", ctx.Err())
	}
	if err != nil {
		conn.Close()
		return nil, fmt.Errorf("reading qmp greeting: %w", err)
	}
	if m.QMP == nil {
		conn.Close()
		return nil, errors.New("reading qmp greeting: peer did not announce QMP")
	}
	c := &Client{conn: conn, greeting: *m.QMP, done: make(chan struct{})}
	go c.read(dec)
	if err := c.Execute(ctx, "qmp_capabilities", nil, nil); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// Greeting returns what QEMU announced when the client connected.
func (c *Client) Greeting() Greeting { return c.greeting }

// Execute runs command with args (nil for none; otherwise anything that
// marshals to a JSON object) and, when result is not nil, unmarshals QEMU's
// return value into it. A failure reported by QEMU is an *Error.
//
// When ctx ends first Execute returns ctx's error; QEMU may still carry the
// command out, and its late answer is discarded.
func (c *Client) Execute(ctx context.Context, command string, args, result any) error {
	c.exec.Lock()
	defer c.exec.Unlock()

	c.nextID++
	id := c.nextID
	ch := make(chan message, 1)
	c.mu.Lock()
	if c.readErr != nil {
		err := c.readErr
		c.mu.Unlock()
		return fmt.Errorf("qmp %s: %w", command, err)
	}
	// The waiter is registered before the request is written: the answer may
	// arrive before this goroutine reaches the select below.
	c.waitID, c.waitCh = id, ch
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.waitCh = nil
		c.mu.Unlock()
	}()

	b, err := json.Marshal(request{Execute: command, Arguments: args, ID: id})
	if err != nil {
		return fmt.Errorf("qmp %s: encoding arguments: %w", command, err)
	}
	// A zero deadline (ctx has none) clears one left by an earlier command.
	d, _ := ctx.Deadline()
	c.conn.SetWriteDeadline(d)
	// QEMU's parser needs no line ends, but line-oriented peers and logs do.
	if _, err := c.conn.Write(append(b, '\n')); err != nil {
		return fmt.Errorf("qmp %s: sending: %w", command, err)
	}

	select {
	case m := <-ch:
		if m.Error != nil {
			return &Error{Command: command, Class: m.Error.Class, Desc: m.Error.Desc}
		}
		if result != nil {
			if err := json.Unmarshal(m.Return, result); err != nil {
				return fmt.Errorf("qmp %s: decoding result %s: %w", command, m.Return, err)
			}
		}
		return nil
	case <-ctx.Done():
		return fmt.Errorf("qmp %s: %w", command, ctx.Err())
	case <-c.done:
		return fmt.Errorf("qmp %s: %w", command, c.err())
	}
}

// Events returns the asynchronous events received so far, oldest first.
func (c *Client) Events() []Event {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Event(nil), c.events...)
}

// Close closes the connection. Commands in flight fail with ErrClosed.
func (c *Client) Close() error {
	err := c.conn.Close()
	<-c.done
	return err
}

func (c *Client) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.readErr
}

// read receives every message until the connection fails, hands command
// answers to the waiting Execute and keeps events.
func (c *Client) read(dec *json.Decoder) {
	defer close(c.done)
	for {
		var m message
		if err := dec.Decode(&m); err != nil {
			c.mu.Lock()
			c.readErr = fmt.Errorf("%w: %v", ErrClosed, err)
			c.mu.Unlock()
			return
		}
		c.mu.Lock()
		switch {
		case m.Event != "":
			ev := Event{Name: m.Event, Data: m.Data}
			if m.Timestamp != nil {
				ev.Time = time.Unix(m.Timestamp.Seconds, m.Timestamp.Microseconds*1000)
			}
			c.events = append(c.events, ev)
		case m.ID != nil && c.waitCh != nil && *m.ID == c.waitID:
			// ch has room for exactly this one answer, so the send never
			// blocks the reader.
			c.waitCh <- m
			c.waitCh = nil
		}
		// Anything else is the late answer to a command whose caller gave
		// up; dropping it keeps later answers matched to their commands.
		c.mu.Unlock()
	}
}
