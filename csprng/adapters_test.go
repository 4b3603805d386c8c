package csprng

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
)

func TestUUIDs(t *testing.T) {
	testSource(t)
	uuid.SetRand(Reader)
	defer uuid.SetRand(nil)
	seen := map[uuid.UUID]bool{}
	for range 10000 {
		id := uuid.New()
		if id.Version() != 4 || id.Variant() != uuid.RFC4122 || seen[id] {
			t.Fatalf("uuid %v: version %d, variant %v, seen before %v", id, id.Version(), id.Variant(), seen[id])
		}
		seen[id] = true
	}
	if id := NewUUID(); id.Version() != 4 {
		t.Fatalf("NewUUID version %d", id.Version())
	}
	a, b := NewUUIDv7(), NewUUIDv7()
	if a.Version() != 7 || a == b {
		t.Fatalf("NewUUIDv7: %v %v", a, b)
	}
}

// TestTLSHandshake: a TLS 1.3 handshake with csprng.Reader as both sides'
// Config.Rand.
func TestTLSHandshake(t *testing.T) {
	testSource(t)
	key, err := ecdsa.GenerateKey(elliptic.P256(), Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "snapsafe.test"},
		DNSNames:     []string{"snapsafe.test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
	}
	der, err := x509.CreateCertificate(Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)

	cc, sc := net.Pipe()
	server := tls.Server(sc, &tls.Config{
		Rand:         Reader,
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}},
	})
	client := tls.Client(cc, &tls.Config{Rand: Reader, RootCAs: pool, ServerName: "snapsafe.test"})
	errc := make(chan error, 1)
	go func() {
		defer server.Close()
		if err := server.Handshake(); err != nil {
			errc <- err
			return
		}
		_, err := server.Write([]byte("hello\n"))
		errc <- err
	}()
	if err := client.Handshake(); err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(client).ReadString('\n')
	if err != nil || line != "hello\n" {
		t.Fatalf("read %q, %v", line, err)
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if v := client.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Fatalf("version %x", v)
	}
}

// statOutput is 4 MiB of generator output, read in uneven sizes through
// both APIs, for the statistical test suites.
func statOutput(t *testing.T) []byte {
	testSource(t)
	out := make([]byte, 0, 4<<20)
	r := New()
	sizes := []int{1, 7, 8, 31, 33, 100, 511, 512, 4000, 4097, 65536}
	for i := 0; len(out) < cap(out); i++ {
		b := make([]byte, min(sizes[i%len(sizes)], cap(out)-len(out)))
		if i%2 == 0 {
			Read(b)
		} else {
			r.Read(b)
		}
		out = append(out, b...)
	}
	return out
}

// TestIntegrationRngtest runs the FIPS 140-2 tests of rngtest (rng-tools)
// over 4 MiB of output.
func TestIntegrationRngtest(t *testing.T) {
	path, err := exec.LookPath("rngtest")
	if err != nil {
		t.Skip("rngtest not installed: apt-get install rng-tools5 (make test installs it in CI)")
	}
	cmd := exec.Command(path)
	cmd.Stdin = strings.NewReader(string(statOutput(t)))
	out, _ := cmd.CombinedOutput() // rngtest exits 1 when any block fails
	var ok, fail int
	for _, line := range strings.Split(string(out), "\n") {
		if _, after, found := strings.Cut(line, "FIPS 140-2 successes: "); found {
			ok = atoi(after)
		}
		if _, after, found := strings.Cut(line, "FIPS 140-2 failures: "); found {
			fail = atoi(after)
		}
	}
	t.Logf("rngtest: %d blocks passed, %d failed", ok, fail)
	// 4 MiB is 1677 blocks of 20000 bits; a good generator fails about
	// 0.08% of them.
	if ok+fail < 1600 || fail > 5 {
		t.Fatalf("rngtest: %d passed, %d failed:\n%s", ok, fail, out)
	}
}

// TestIntegrationEnt runs ent over 4 MiB of output.
func TestIntegrationEnt(t *testing.T) {
	path, err := exec.LookPath("ent")
	if err != nil {
		t.Skip("ent not installed: apt-get install ent (make test installs it in CI)")
	}
	f, err := os.CreateTemp(t.TempDir(), "out")
	if err != nil {
		t.Fatal(err)
	}
	f.Write(statOutput(t))
	f.Close()
	out, err := exec.Command(path, "-t", f.Name()).Output()
	if err != nil {
		t.Fatal(err)
	}
	// -t prints CSV: 0,File-bytes,Entropy,Chi-square,Mean,Monte-Carlo-Pi,Serial-Correlation
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	fields := strings.Split(lines[len(lines)-1], ",")
	if len(fields) < 7 {
		t.Fatalf("ent output %q", out)
	}
	t.Logf("ent: entropy %s bits per byte, chi-square %s, mean %s, pi %s, serial correlation %s", fields[2], fields[3], fields[4], fields[5], fields[6])
	if entropy, err := strconv.ParseFloat(fields[2], 64); err != nil || entropy <= 7.9999 {
		t.Fatalf("entropy %s bits per byte, want over 7.9999", fields[2])
	}
}

func atoi(s string) int {
	n, _ := strconv.Atoi(strings.Fields(s + " 0")[0])
	return n
}
