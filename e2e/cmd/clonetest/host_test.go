package main

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/snapsafe/snapsafe/runtime/api"
	"github.com/snapsafe/snapsafe/runtime/provider"
	"github.com/snapsafe/snapsafe/runtime/provider/hostapi"
)

// fakeProvider plays the guest's provider behind a real host endpoint.
type fakeProvider struct {
	mu       sync.Mutex
	gen      uint64
	adapted  bool
	reseeded bool
	entropy  [][]byte
}

func (p *fakeProvider) StatusWithLists() api.Status {
	p.mu.Lock()
	defer p.mu.Unlock()
	return api.Status{Generation: p.gen, Source: api.SourceInfo{Name: "manual"},
		WatcherList: []api.Watcher{{Label: "watch", PID: 7, Comm: "snapsafectl", Tracked: true, Outdated: !p.adapted}}}
}

func (p *fakeProvider) WaitAdapted(ctx context.Context, after uint64) provider.Adapted {
	p.mu.Lock()
	gen, ok := p.gen, p.adapted
	p.mu.Unlock()
	if gen > after && ok {
		return provider.Adapted{Generation: gen, Adapted: true, Waited: time.Millisecond}
	}
	<-ctx.Done()
	return provider.Adapted{Generation: gen}
}

func (p *fakeProvider) Restore(_ context.Context, entropy []byte) (uint64, bool, string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.gen++
	p.entropy = append(p.entropy, append([]byte(nil), entropy...))
	if !p.reseeded {
		return p.gen, false, "not reseeded: the provider lacks CAP_SYS_ADMIN", nil
	}
	return p.gen, true, "forced by the provider (RNDRESEEDCRNG)", nil
}

// serve starts a real host endpoint in front of p, with the token, and
// returns the host's client of it.
func serve(t *testing.T, p *fakeProvider, token string) *endpoint {
	t.Helper()
	file := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(file, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	s, err := hostapi.New(hostapi.Config{Listen: []string{"tcp:127.0.0.1:0"}, TokenFile: file})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, p) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return newEndpoint("vm", s.Addrs()[0].(*net.TCPAddr).Port)
}

func TestEndpoint(t *testing.T) {
	token := strings.Repeat("t0ken", 8)
	p := &fakeProvider{gen: 1, reseeded: true}
	e := serve(t, p, token)
	ctx := context.Background()

	st, err := e.waitStatus(ctx)
	if err != nil || st.Generation != 1 || st.Source.Name != "manual" {
		t.Fatalf("status = %+v, %v", st, err)
	}

	// Not adapted yet: 504 with the outdated watcher, decoded, no error.
	code, w, err := e.wait(ctx, 1, 50*time.Millisecond)
	if err != nil || code != 504 || w.Adapted || len(w.Outdated) != 1 || w.Outdated[0].Comm != "snapsafectl" {
		t.Errorf("wait before the restore = %d %+v, %v", code, w, err)
	}

	// A wrong token: 403, and the refusal's message is the error.
	code, _, err = e.restore(ctx, "wrong", make([]byte, 32))
	var ae *answerError
	if code != 403 || !errors.As(err, &ae) || !strings.Contains(err.Error(), "does not match --host-token-file") {
		t.Errorf("restore with a wrong token = %d, %v", code, err)
	}
	// Too little entropy: 400.
	if code, _, err = e.restore(ctx, token, make([]byte, 16)); code != 400 || err == nil {
		t.Errorf("restore with 16 bytes = %d, %v", code, err)
	}
	if p.gen != 1 {
		t.Fatalf("refused restores bumped to %d", p.gen)
	}

	entropy := []byte(strings.Repeat("e", 32))
	code, r, err := e.restore(ctx, token, entropy)
	if err != nil || code != 200 || !r.OK || !r.KernelReseeded || r.Generation != 2 {
		t.Errorf("restore = %d %+v, %v", code, r, err)
	}
	if len(p.entropy) != 1 || string(p.entropy[0]) != string(entropy) {
		t.Errorf("the provider got entropy %q", p.entropy)
	}

	p.mu.Lock()
	p.adapted = true
	p.mu.Unlock()
	code, w, err = e.wait(ctx, 1, time.Second)
	if err != nil || code != 200 || !w.Adapted || w.Generation != 2 {
		t.Errorf("wait = %d %+v, %v", code, w, err)
	}

	// A restore the kernel did not follow: 500 with the response's fields.
	p.reseeded = false
	code, r, err = e.restore(ctx, token, entropy)
	if err != nil || code != 500 || r.OK || r.KernelReseeded || r.Generation != 3 || !strings.Contains(r.KernelReseed, "CAP_SYS_ADMIN") {
		t.Errorf("restore without a reseed = %d %+v, %v", code, r, err)
	}
}

// The host's part of each scenario against a real endpoint.
func TestHostParts(t *testing.T) {
	token := strings.Repeat("t0ken", 8)
	p := &fakeProvider{gen: 1, reseeded: true, adapted: true}
	e := serve(t, p, token)
	var r hostRun
	resumed := time.Now()
	hostPush(context.Background(), e, token, 1, &r, resumed)
	if !r.pushed || r.refusedCode != 403 || r.restoreCode != 200 || r.restoreErr != nil || r.entropy != 32 ||
		r.waitCode != 200 || r.wait.Generation != 2 || r.restored <= 0 || r.adapted < r.restored {
		t.Errorf("hostPush: %+v", r)
	}
	if len(p.entropy) != 1 {
		t.Errorf("the provider got %d restores, want 1 (the refused one does not count)", len(p.entropy))
	}
	if s := r.String(); !strings.Contains(s, "wrong token -> HTTP 403; POST /v1/restore -> HTTP 200 ok=true generation 2") ||
		!strings.Contains(s, "GET /v1/wait -> HTTP 200 adapted=true generation 2") {
		t.Errorf("String() = %q", s)
	}

	r = hostRun{}
	hostWait(context.Background(), e, "", 1, &r, resumed)
	if r.pushed || r.waitCode != 200 || !r.wait.Adapted || r.adapted <= 0 {
		t.Errorf("hostWait: %+v", r)
	}
}

// Two hosts' pushes carry different entropy.
func TestHostPushEntropyDiffers(t *testing.T) {
	token := strings.Repeat("t0ken", 8)
	p := &fakeProvider{gen: 1, reseeded: true, adapted: true}
	e := serve(t, p, token)
	for range 2 {
		var r hostRun
		hostPush(context.Background(), e, token, 0, &r, time.Now())
	}
	if len(p.entropy) != 2 || string(p.entropy[0]) == string(p.entropy[1]) {
		t.Errorf("entropy of the two pushes: %x", p.entropy)
	}
}

func TestDecodeAnswer(t *testing.T) {
	var w hostapi.WaitResponse
	if err := decodeAnswer(504, []byte(`{"generation":1,"adapted":false,"waited_seconds":30,"outdated":[{"label":"x"}]}`), &w); err != nil || w.Generation != 1 || len(w.Outdated) != 1 {
		t.Errorf("504 wait = %+v, %v", w, err)
	}
	err := decodeAnswer(400, []byte(`{"error":"after=\"x\" is not a generation"}`), &w)
	if err == nil || err.Error() != `HTTP 400: after="x" is not a generation` {
		t.Errorf("400 = %v", err)
	}
	if err := decodeAnswer(200, []byte("<html>proxy</html>"), &w); err == nil || !strings.Contains(err.Error(), "not the expected JSON") {
		t.Errorf("HTML = %v", err)
	}
}

func TestParseHostForward(t *testing.T) {
	out := "Hub -1 (n0):\r\n" +
		"  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n" +
		"  TCP[HOST_FORWARD]   3       127.0.0.1 43735       10.0.2.15  8080     0     0\r\n" +
		"  TCP[ESTABLISHED]   12       127.0.0.1 50000       10.0.2.15  8080     0     0\r\n"
	if port, err := parseHostForward(out, 8080); err != nil || port != 43735 {
		t.Errorf("parseHostForward = %d, %v", port, err)
	}
	for _, tc := range []struct{ out, want string }{
		{"Hub -1 (n0):\n", "0 TCP forwards to the guest's port 8080"},
		{out + "  TCP[HOST_FORWARD]   4       127.0.0.1 43736       10.0.2.15  8080     0     0\n", "2 TCP forwards"},
		{"  TCP[HOST_FORWARD]   3       127.0.0.1 x       10.0.2.15  8080     0     0\n", "cannot read the forward"},
	} {
		if _, err := parseHostForward(tc.out, 8080); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseHostForward(%q) = %v, want %q", tc.out, err, tc.want)
		}
	}
}
