package main

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/snapsafe/snapsafe/internal/eventually"
)

// curl runs curl against the host endpoint and returns the HTTP status and
// the body.
func curl(t *testing.T, args ...string) (int, string) {
	t.Helper()
	path, err := exec.LookPath("curl")
	if err != nil {
		t.Fatalf("curl is needed to play the host: apt-get install curl (.ci/run installs it): %v", err)
	}
	out, err := exec.Command(path, append([]string{"-sS", "-w", "\n%{http_code}"}, args...)...).Output()
	if err != nil {
		t.Fatalf("curl %v: %v", args, err)
	}
	s := strings.TrimRight(string(out), "\n")
	i := strings.LastIndexByte(s, '\n')
	code, _ := strconv.Atoi(s[i+1:])
	return code, s[:max(i, 0)]
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// TestIntegrationHostEndpoint walks the host-endpoint bar with the real
// binaries and curl as the host: /v1/status matches status --json; /v1/wait
// answers 504 naming a watcher that has not acked and 200 once it did;
// /metrics parses as Prometheus text; a restore without the token is
// refused and changes nothing, one with it bumps (reason host) and reports
// the kernel reseed.
func TestIntegrationHostEndpoint(t *testing.T) {
	dir := stateDir(t)
	token := base64.RawURLEncoding.EncodeToString([]byte("a token for the host endpoint test"))
	tokFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokFile, []byte(token), 0o600); err != nil {
		t.Fatal(err)
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	startProvider(t, dir, "--host-listen", "tcp:"+strings.TrimPrefix(base, "http://"), "--host-token-file", tokFile)

	// /v1/status is the object of status --json.
	code, body := curl(t, base+"/v1/status")
	var viaHTTP, viaCLI map[string]any
	if err := json.Unmarshal([]byte(body), &viaHTTP); code != 200 || err != nil {
		t.Fatalf("GET /v1/status: %d %v\n%s", code, err, body)
	}
	if err := json.Unmarshal([]byte(mustCtl(t, dir, "status", "--json")), &viaCLI); err != nil {
		t.Fatal(err)
	}
	keys := func(m map[string]any) []string {
		k := make([]string, 0, len(m))
		for s := range m {
			k = append(k, s)
		}
		slices.Sort(k)
		return k
	}
	if !slices.Equal(keys(viaHTTP), keys(viaCLI)) {
		t.Fatalf("/v1/status keys %v\nstatus --json keys %v", keys(viaHTTP), keys(viaCLI))
	}
	for _, k := range []string{"generation", "epoch", "provider_pid", "backend", "watchers", "dir"} {
		if fmt.Sprint(viaHTTP[k]) != fmt.Sprint(viaCLI[k]) {
			t.Fatalf("/v1/status %s = %v, status --json %v", k, viaHTTP[k], viaCLI[k])
		}
	}

	// /v1/wait: 504 naming the late watcher, 200 once it acked.
	startWatch(t, dir, "--ack", "--label", "slow-svc", "--exec", "sleep 1")
	eventually.True(t, "the watcher", func() bool { return status(t, dir).Watchers == 1 })
	before := status(t, dir).Generation
	mustCtl(t, dir, "bump")
	code, body = curl(t, fmt.Sprintf("%s/v1/wait?after=%d&timeout=200ms", base, before))
	if code != 504 || !strings.Contains(body, `"adapted": false`) || !strings.Contains(body, `"label": "slow-svc"`) {
		t.Fatalf("wait before the ack: %d\n%s\nwant 504 naming slow-svc", code, body)
	}
	code, body = curl(t, fmt.Sprintf("%s/v1/wait?after=%d&timeout=20s", base, before))
	if code != 200 || !strings.Contains(body, `"adapted": true`) {
		t.Fatalf("wait until the ack: %d\n%s\nwant 200 adapted", code, body)
	}

	// /metrics parses and has the families.
	code, body = curl(t, base+"/metrics")
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if code != 200 || err != nil {
		t.Fatalf("GET /metrics: %d %v", code, err)
	}
	for _, f := range []string{"snapsafe_generation", "snapsafe_bumps_total", "snapsafe_watchers", "snapsafe_adapt_seconds", "snapsafe_clients", "snapsafe_refused_total", "snapsafe_build_info"} {
		if fams[f] == nil {
			t.Errorf("/metrics lacks %s", f)
		}
	}

	// POST /v1/restore: 403 without the token, nothing changes; with it, a
	// bump with reason host and the kernel reseed reported.
	entropy := `{"entropy": "` + base64.StdEncoding.EncodeToString([]byte("32 bytes of fresh host entropy!!")) + `"}`
	g := status(t, dir).Generation
	if code, body = curl(t, "-X", "POST", "-d", entropy, base+"/v1/restore"); code != 403 {
		t.Fatalf("restore without the token: %d %s, want 403", code, body)
	}
	if code, _ = curl(t, "-X", "POST", "-H", "Authorization: Bearer wrong", "-d", entropy, base+"/v1/restore"); code != 403 {
		t.Fatalf("restore with a wrong token: %d, want 403", code)
	}
	if s := status(t, dir); s.Generation != g {
		t.Fatalf("refused restores moved the generation %d -> %d", g, s.Generation)
	}
	code, body = curl(t, "-X", "POST", "-H", "Authorization: Bearer "+token, "-d", entropy, base+"/v1/restore")
	var r struct {
		OK             bool   `json:"ok"`
		Generation     uint64 `json:"generation"`
		KernelReseeded bool   `json:"kernel_reseeded"`
	}
	_ = json.Unmarshal([]byte(body), &r)
	if r.Generation != g+1 || status(t, dir).Reason != "host" {
		t.Fatalf("restore with the token: %d %s; want generation %d, reason host", code, body, g+1)
	}
	if os.Geteuid() == 0 && (code != 200 || !r.OK || !r.KernelReseeded) {
		t.Fatalf("restore as root: %d %s; want 200 with the kernel reseeded", code, body)
	}
}
