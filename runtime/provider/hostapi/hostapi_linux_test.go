package hostapi_test

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/snapsafe/snapsafe/internal/testprovider"
	"github.com/snapsafe/snapsafe/runtime/api"
	"github.com/snapsafe/snapsafe/runtime/client"
	"github.com/snapsafe/snapsafe/runtime/provider"
	"github.com/snapsafe/snapsafe/runtime/provider/hostapi"
	"github.com/snapsafe/snapsafe/shm"
)

type env struct {
	t    *testing.T
	dir  string
	tp   *testprovider.Provider
	addr net.Addr
	base string // http://127.0.0.1:PORT
	tok  string
}

// start runs a provider and its host endpoint on a loopback port, with a
// token file.
func start(t *testing.T) *env {
	t.Helper()
	e := startOn(t, "tcp:127.0.0.1:0")
	e.base = "http://" + e.addr.String()
	return e
}

// startOn is start with the endpoint on listen; base is left empty.
func startOn(t *testing.T, listen string) *env {
	t.Helper()
	e := &env{t: t, dir: t.TempDir()}
	e.tok = base64.RawURLEncoding.EncodeToString(random(t, 24))
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte(e.tok+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := hostapi.New(hostapi.Config{Listen: []string{listen}, TokenFile: tokFile, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		t.Fatal(err)
	}
	e.tp = testprovider.Start(t, provider.Config{Dir: e.dir, OnAdapted: srv.ObserveAdapt})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, e.tp.Provider) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	e.addr = srv.Addrs()[0]
	return e
}

func random(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func (e *env) get(path string, v any) int {
	e.t.Helper()
	resp, err := http.Get(e.base + path)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	if v != nil {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			e.t.Fatalf("GET %s: %v", path, err)
		}
	}
	return resp.StatusCode
}

func (e *env) restore(token string, body string) (int, hostapi.RestoreResponse) {
	e.t.Helper()
	req, _ := http.NewRequest("POST", e.base+"/v1/restore", strings.NewReader(body))
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var r hostapi.RestoreResponse
	b, _ := io.ReadAll(resp.Body)
	_ = json.Unmarshal(b, &r)
	return resp.StatusCode, r
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// TestStatus: /v1/status is the status object, watcher list included.
func TestStatus(t *testing.T) {
	e := start(t)
	c, err := client.Attach(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w, err := c.Watch(ctxT(t), client.WithLabel("svc"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	var s api.Status
	if code := e.get("/v1/status", &s); code != 200 {
		t.Fatalf("GET /v1/status: %d", code)
	}
	want, err := c.Status(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if s.Generation != want.Generation || s.Watchers != 1 || len(s.WatcherList) != 1 || s.WatcherList[0].Label != "svc" || s.ProviderPID != want.ProviderPID {
		t.Fatalf("/v1/status = %+v\nwant the status of the control socket %+v", s, want)
	}
}

// TestWait: 504 naming the watcher that does not ack, 200 once it acks.
func TestWait(t *testing.T) {
	e := start(t)
	c, err := client.Attach(e.dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w, err := c.Watch(ctxT(t), client.WithLabel("late-svc"))
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	before := c.Generation()
	if _, err := e.tp.Bump(shm.ReasonForced, 0); err != nil {
		t.Fatal(err)
	}
	var r hostapi.WaitResponse
	if code := e.get(fmt.Sprintf("/v1/wait?after=%d&timeout=200ms", before), &r); code != 504 || r.Adapted {
		t.Fatalf("wait with a watcher that did not ack: %d %+v, want 504", code, r)
	}
	if len(r.Outdated) != 1 || r.Outdated[0].Label != "late-svc" || r.Outdated[0].PID != int32(os.Getpid()) {
		t.Fatalf("504 names %+v, want late-svc", r.Outdated)
	}
	// The wait in progress ends once the watcher acks.
	got := make(chan int, 1)
	go func() { got <- e.get(fmt.Sprintf("/v1/wait?after=%d&timeout=10s", before), &r) }()
	g, err := w.Next(ctxT(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Ack(ctxT(t), g); err != nil {
		t.Fatal(err)
	}
	if code := <-got; code != 200 || !r.Adapted || r.Generation != g {
		t.Fatalf("wait after the ack: %d %+v, want 200 adapted at %d", code, r, g)
	}
	// A generation not yet above after: the wait holds until the next bump.
	go func() { got <- e.get(fmt.Sprintf("/v1/wait?after=%d&timeout=10s", g), &r) }()
	g2, _ := e.tp.Bump(shm.ReasonForced, 0)
	g3, _ := w.Next(ctxT(t))
	if err := w.Ack(ctxT(t), g3); err != nil {
		t.Fatal(err)
	}
	if code := <-got; code != 200 || r.Generation < g2 {
		t.Fatalf("wait?after=%d: %d %+v, want 200 at %d or later", g, code, r, g2)
	}
	for _, bad := range []string{"after=x", "timeout=-1s", "timeout=1h"} {
		if code := e.get("/v1/wait?"+bad, nil); code != 400 {
			t.Fatalf("wait?%s: %d, want 400", bad, code)
		}
	}
}

// TestWaitsBounded: past MaxWaits concurrent waits the endpoint answers 503
// at once, and the control socket and bumps are not delayed.
func TestWaitsBounded(t *testing.T) {
	e := start(t)
	c, _ := client.Attach(e.dir)
	defer c.Close()
	w, _ := c.Watch(ctxT(t)) // never acks: waits hold
	defer w.Close()
	before := c.Generation()
	e.tp.Bump(shm.ReasonForced, 0)
	// MaxWaits+extra waits at once: exactly extra are refused at once.
	const extra = 8
	codes := make(chan int, hostapi.MaxWaits+extra)
	for range hostapi.MaxWaits + extra {
		go func() { codes <- e.get(fmt.Sprintf("/v1/wait?after=%d&timeout=30s", before), nil) }()
	}
	for range extra {
		if code := <-codes; code != 503 {
			t.Fatalf("a wait ended with %d while the watcher is outdated; want 503 for the ones past the bound", code)
		}
	}
	start := time.Now()
	if _, err := c.Bump(ctxT(t), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Status(ctxT(t)); err != nil {
		t.Fatal(err)
	}
	t.Logf("bump and status with %d waits held: %v", hostapi.MaxWaits, time.Since(start))
	w.Close() // the last outdated watcher goes: every wait ends adapted
	for range hostapi.MaxWaits {
		if code := <-codes; code != 200 {
			t.Fatalf("a held wait ended with %d, want 200 once nobody is outdated", code)
		}
	}
}

// TestSlowPeers: peers that never finish their headers hold no lock: bumps,
// the control socket and other HTTP peers are served meanwhile.
func TestSlowPeers(t *testing.T) {
	e := start(t)
	host := strings.TrimPrefix(e.base, "http://")
	for range 50 {
		nc, err := net.Dial("tcp", host)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		fmt.Fprintf(nc, "GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Slow: ") // never ends
	}
	g, err := e.tp.Bump(shm.ReasonForced, 0)
	if err != nil {
		t.Fatal(err)
	}
	var s api.Status
	if code := e.get("/v1/status", &s); code != 200 || s.Generation != g {
		t.Fatalf("status beside 50 slow peers: %d, generation %d, want %d", code, s.Generation, g)
	}
	// A body larger than the bound is refused, not read.
	if code, _ := e.restore(e.tok, `{"entropy":"`+strings.Repeat("A", hostapi.MaxBody)+`"}`); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversized restore: %d, want 413", code)
	}
}

// TestMetrics: /metrics parses as Prometheus text with the snapsafe_
// families, and the adapt histogram counts bumps.
func TestMetrics(t *testing.T) {
	e := start(t)
	e.tp.Bump(shm.ReasonForced, 0)
	resp, err := http.Get(e.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	p := expfmt.NewTextParser(model.LegacyValidation) // Prometheus's classic names: what every scraper accepts
	fams, err := p.TextToMetricFamilies(bufio.NewReader(resp.Body))
	if err != nil {
		t.Fatalf("/metrics is not Prometheus text: %v", err)
	}
	for _, name := range []string{"snapsafe_generation", "snapsafe_bumps_total", "snapsafe_watchers", "snapsafe_adapt_seconds",
		"snapsafe_clients", "snapsafe_refused_total", "snapsafe_build_info", "snapsafe_kernel_reseeded"} {
		if fams[name] == nil {
			t.Errorf("/metrics lacks %s", name)
		}
	}
	if g := fams["snapsafe_generation"].GetMetric()[0].GetGauge().GetValue(); uint64(g) != e.tp.Generation() {
		t.Errorf("snapsafe_generation = %v, want %d", g, e.tp.Generation())
	}
	if n := fams["snapsafe_adapt_seconds"].GetMetric()[0].GetHistogram().GetSampleCount(); n < 2 {
		t.Errorf("snapsafe_adapt_seconds counted %d bumps, want the start-up bump and one more", n)
	}
	forced := 0.0
	for _, m := range fams["snapsafe_bumps_total"].GetMetric() {
		if m.GetLabel()[0].GetValue() == "forced" {
			forced = m.GetCounter().GetValue()
		}
	}
	if forced != 1 {
		t.Errorf("snapsafe_bumps_total{reason=forced} = %v, want 1", forced)
	}
}

// TestRestore: without the token (or with a wrong one) a push is refused
// with 403 and changes nothing; with it, it bumps with reason host and says
// whether the kernel RNG was reseeded.
func TestRestore(t *testing.T) {
	e := start(t)
	body := `{"entropy":"` + base64.StdEncoding.EncodeToString(random(t, 32)) + `"}`
	before := e.tp.Generation()
	for _, tok := range []string{"", "not-the-token-at-all"} {
		if code, _ := e.restore(tok, body); code != 403 {
			t.Fatalf("restore with token %q: %d, want 403", tok, code)
		}
	}
	if g := e.tp.Generation(); g != before {
		t.Fatalf("refused restores moved the generation %d -> %d", before, g)
	}
	if code, _ := e.restore(e.tok, `{"entropy":"c2hvcnQ="}`); code != 400 {
		t.Fatalf("restore with 5 bytes of entropy: %d, want 400", code)
	}
	code, r := e.restore(e.tok, body)
	if r.Generation != before+1 || e.tp.Generation() != before+1 {
		t.Fatalf("restore: %d %+v, want generation %d", code, r, before+1)
	}
	var s api.Status
	e.get("/v1/status", &s)
	if s.Reason != "host" || s.KernelReseeded != r.KernelReseeded || s.KernelReseed != r.KernelReseed {
		t.Fatalf("status after the restore: reason %q reseeded %v (%s); the response said %v (%s)", s.Reason, s.KernelReseeded, s.KernelReseed, r.KernelReseeded, r.KernelReseed)
	}
	// Never "ok" after a failed reseed: as root the reseed succeeds (200,
	// ok); without CAP_SYS_ADMIN it fails (500, not ok).
	if os.Geteuid() == 0 {
		if code != 200 || !r.OK || !r.KernelReseeded {
			t.Fatalf("restore as root: %d %+v, want 200 with the kernel reseeded", code, r)
		}
	} else if code != 500 || r.OK || r.KernelReseeded {
		t.Fatalf("restore without CAP_SYS_ADMIN: %d %+v, want 500 and not ok", code, r)
	}
}

// TestTokenFile: a token file others may read or write, a symbolic link or
// a short token is refused at start, naming the fix.
func TestTokenFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good")
	os.WriteFile(good, []byte("0123456789abcdef0123\n"), 0o600)
	for _, tc := range []struct {
		name, want string
		make       func(p string)
	}{
		{"world readable", "chmod 0600", func(p string) { os.WriteFile(p, []byte("0123456789abcdef0123"), 0o644) }},
		{"group writable", "chmod 0600", func(p string) {
			os.WriteFile(p, []byte("0123456789abcdef0123"), 0o600)
			os.Chmod(p, 0o620) // past the umask
		}},
		{"symlink", "not a regular file", func(p string) { os.Symlink(good, p) }},
		{"short", "at least 16", func(p string) { os.WriteFile(p, []byte("abc"), 0o600) }},
	} {
		p := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-"))
		tc.make(p)
		if _, err := hostapi.New(hostapi.Config{TokenFile: p}); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s token file: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
	if _, err := hostapi.New(hostapi.Config{TokenFile: good}); err != nil {
		t.Fatalf("good token file: %v", err)
	}
	for _, bad := range []string{"tcp", "tcp:", "udp:1", "vsock:x", "ftp:host:1"} {
		if _, err := hostapi.New(hostapi.Config{Listen: []string{bad}}); err == nil {
			t.Errorf("--host-listen %q accepted", bad)
		}
	}
}
