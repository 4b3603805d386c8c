package qmp

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// greeting is QEMU 7.2's greeting as captured from qemu-system-x86_64.
const greeting = `{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}`

// fakeQEMU serves one QMP connection on a unix socket. Like QEMU it refuses
// commands before qmp_capabilities. handle answers every later command with
// the lines to send (each a JSON object, events included); it runs on the
// server goroutine.
type fakeQEMU struct {
	path   string
	handle func(cmd string, args json.RawMessage, id uint64) []string
	errc   chan error
}

func startFake(t *testing.T, handle func(cmd string, args json.RawMessage, id uint64) []string) *fakeQEMU {
	t.Helper()
	// t.TempDir paths can exceed the 108-byte limit of a unix socket path.
	dir, err := os.MkdirTemp("", "qmp")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	f := &fakeQEMU{path: filepath.Join(dir, "qmp.sock"), handle: handle, errc: make(chan error, 1)}
	l, err := net.Listen("unix", f.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() { f.errc <- f.serve(l) }()
	return f
}

func (f *fakeQEMU) serve(l net.Listener) error {
	conn, err := l.Accept()
	if err != nil {
		return err
	}
	defer conn.Close()
	send := func(line string) error {
		_, err := fmt.Fprintf(conn, "%s\r\n", line)
		return err
	}
	if err := send(greeting); err != nil {
		return err
	}
	sc := bufio.NewScanner(conn)
	negotiated := false
	for sc.Scan() {
		var req struct {
			Execute   string          `json:"execute"`
			Arguments json.RawMessage `json:"arguments"`
			ID        uint64          `json:"id"`
		}
		if err := json.Unmarshal(sc.Bytes(), &req); err != nil {
			return fmt.Errorf("request %q: %v", sc.Bytes(), err)
		}
		var lines []string
		switch {
		case req.Execute == "qmp_capabilities":
			negotiated = true
			lines = []string{fmt.Sprintf(`{"return": {}, "id": %d}`, req.ID)}
		case !negotiated:
			lines = []string{fmt.Sprintf(`{"id": %d, "error": {"class": "CommandNotFound", "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"}}`, req.ID)}
		default:
			lines = f.handle(req.Execute, req.Arguments, req.ID)
		}
		for _, l := range lines {
			if err := send(l); err != nil {
				return err
			}
		}
		if req.Execute == "quit" {
			return nil // QEMU exits: the deferred Close ends the connection
		}
	}
	return sc.Err()
}

func dial(t *testing.T, f *fakeQEMU) *Client {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := Dial(ctx, f.path)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestExecuteResultAndEvents(t *testing.T) {
	f := startFake(t, func(cmd string, args json.RawMessage, id uint64) []string {
		switch cmd {
		case "stop":
			// QEMU sends the STOP event before the answer to "stop".
			return []string{
				`{"timestamp": {"seconds": 1700000000, "microseconds": 250000}, "event": "STOP"}`,
				fmt.Sprintf(`{"return": {}, "id": %d}`, id),
			}
		case "migrate":
			return []string{fmt.Sprintf(`{"return": {"echo": %s}, "id": %d}`, args, id)}
		case "query-status":
			return []string{fmt.Sprintf(`{"return": {"status": "paused", "singlestep": false, "running": false}, "id": %d}`, id)}
		}
		return []string{fmt.Sprintf(`{"id": %d, "error": {"class": "CommandNotFound", "desc": "The command %s has not been found"}}`, id, cmd)}
	})
	c := dial(t, f)
	ctx := context.Background()

	if g := c.Greeting(); g.Version.QEMU.Major != 7 || g.Version.QEMU.Minor != 2 || len(g.Capabilities) != 1 {
		t.Errorf("greeting = %+v", g)
	}
	if err := c.Execute(ctx, "stop", nil, nil); err != nil {
		t.Fatalf("stop: %v", err)
	}
	var echo struct {
		Echo struct {
			URI string `json:"uri"`
		} `json:"echo"`
	}
	if err := c.Execute(ctx, "migrate", map[string]string{"uri": "exec:cat > /tmp/x"}, &echo); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	if echo.Echo.URI != "exec:cat > /tmp/x" {
		t.Errorf("arguments arrived as %+v", echo)
	}
	var st struct {
		Status  string `json:"status"`
		Running bool   `json:"running"`
	}
	if err := c.Execute(ctx, "query-status", nil, &st); err != nil {
		t.Fatalf("query-status: %v", err)
	}
	if st.Status != "paused" || st.Running {
		t.Errorf("query-status = %+v", st)
	}

	evs := c.Events()
	if len(evs) != 1 || evs[0].Name != "STOP" {
		t.Fatalf("events = %+v, want one STOP", evs)
	}
	if want := time.Unix(1700000000, 250000000); !evs[0].Time.Equal(want) {
		t.Errorf("event time = %v, want %v", evs[0].Time, want)
	}
}

func TestExecuteError(t *testing.T) {
	f := startFake(t, func(cmd string, _ json.RawMessage, id uint64) []string {
		return []string{fmt.Sprintf(`{"id": %d, "error": {"class": "GenericError", "desc": "There's a migration process in progress"}}`, id)}
	})
	c := dial(t, f)
	err := c.Execute(context.Background(), "migrate", map[string]string{"uri": "exec:true"}, nil)
	var qe *Error
	if !errors.As(err, &qe) {
		t.Fatalf("err = %v, want *Error", err)
	}
	if qe.Command != "migrate" || qe.Class != "GenericError" || !strings.Contains(qe.Desc, "migration process") {
		t.Errorf("error = %+v", qe)
	}
}

// A command whose caller gave up must not have its late answer delivered to
// the next command.
func TestExecuteLateAnswerDiscarded(t *testing.T) {
	release := make(chan struct{})
	var slowID uint64
	f := startFake(t, func(cmd string, _ json.RawMessage, id uint64) []string {
		switch cmd {
		case "slow":
			slowID = id
			return nil // answered together with the next command
		case "fast":
			<-release
			return []string{
				fmt.Sprintf(`{"return": {"who": "slow"}, "id": %d}`, slowID),
				fmt.Sprintf(`{"return": {"who": "fast"}, "id": %d}`, id),
			}
		}
		return nil
	})
	c := dial(t, f)

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := c.Execute(ctx, "slow", nil, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("slow: err = %v, want deadline exceeded", err)
	}
	close(release)
	var got struct{ Who string }
	if err := c.Execute(context.Background(), "fast", nil, &got); err != nil {
		t.Fatalf("fast: %v", err)
	}
	if got.Who != "fast" {
		t.Errorf("fast got the answer meant for %q", got.Who)
	}
}

func TestExecuteAfterQEMUExits(t *testing.T) {
	f := startFake(t, func(cmd string, _ json.RawMessage, id uint64) []string {
		// "quit": QEMU answers, sends SHUTDOWN and closes the socket.
		return []string{
			fmt.Sprintf(`{"return": {}, "id": %d}`, id),
			`{"timestamp": {"seconds": 1700000001, "microseconds": 5}, "event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}`,
		}
	})
	c := dial(t, f)
	if err := c.Execute(context.Background(), "quit", nil, nil); err != nil {
		t.Fatalf("quit: %v", err)
	}
	if err := <-f.errc; err != nil {
		t.Fatalf("fake: %v", err)
	}
	<-c.done // the reader has seen the connection end
	err := c.Execute(context.Background(), "query-status", nil, nil)
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("err = %v, want ErrClosed", err)
	}
	if evs := c.Events(); len(evs) != 1 || evs[0].Name != "SHUTDOWN" || !strings.Contains(string(evs[0].Data), "host-qmp-quit") {
		t.Errorf("events = %+v", evs)
	}
}

func TestNewClientRejectsNonQMPPeer(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	go fmt.Fprintf(b, "{\"hello\": 1}\n")
	_, err := NewClient(context.Background(), a)
	if err == nil || !strings.Contains(err.Error(), "did not announce QMP") {
		t.Fatalf("err = %v", err)
	}
}

func TestNewClientGreetingTimeout(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	_, err := NewClient(ctx, a)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline exceeded", err)
	}
}
