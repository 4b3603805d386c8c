package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/snapsafe/snapsafe/internal/eventually"
	"github.com/snapsafe/snapsafe/internal/testdevice"
	"github.com/snapsafe/snapsafe/internal/testuser"
)

// The hijacked state directory, played for real: the attacker is uid
// 65534, the victim uid 65533; neither has XDG_RUNTIME_DIR, so both look
// for the victim's per-user directory in a shared temporary directory.

var (
	attacker = &syscall.Credential{Uid: 65534, Gid: 65534}
	victim   = &syscall.Credential{Uid: 65533, Gid: 65533}
)

// userEnv is the environment of a user with no XDG_RUNTIME_DIR or
// SNAPSAFE_DIR whose temporary directory is tmp.
func userEnv(tmp string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "SNAPSAFE_DIR", "XDG_RUNTIME_DIR", "TMPDIR":
			continue
		}
		env = append(env, kv)
	}
	return append(env, "TMPDIR="+tmp)
}

// runAs runs one of the built binaries as cred (nil: this process's user)
// with env (nil: this process's), and returns stdout, stderr and the exit code. It gives up
// after 20 seconds.
func runAs(t *testing.T, cred *syscall.Credential, env []string, name string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, name), args...)
	cmd.Env = env
	if cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	}
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %v as %v did not end within 20s: stderr %q", name, args, cred, errb.String())
	}
	var ee *exec.ExitError
	switch {
	case err == nil:
		return out.String(), errb.String(), 0
	case errors.As(err, &ee):
		return out.String(), errb.String(), ee.ExitCode()
	}
	t.Fatalf("running %s %v: %v", name, args, err)
	return "", "", -1
}

// startAs starts snapsafed as cred with env and waits until its own user
// can reach it on dir.
func startAs(t *testing.T, cred *syscall.Credential, env []string, dir string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(filepath.Join(bin, "snapsafed"), append([]string{"--backend", "manual"}, args...)...)
	cmd.Env = env
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	log := new(syncBuffer)
	cmd.Stderr = log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		if t.Failed() {
			t.Logf("snapsafed as uid %d:\n%s", cred.Uid, log)
		}
	})
	eventually.True(t, "snapsafed as uid "+strconv.FormatUint(uint64(cred.Uid), 10)+" to serve "+dir, func() bool {
		_, _, code := runAs(t, cred, env, "snapsafectl", "--dir", dir, "status")
		return code == 0
	})
	return cmd
}

func wantOneLine(t *testing.T, what, stderr string, words ...string) {
	t.Helper()
	line := strings.TrimSuffix(stderr, "\n")
	if line == "" || strings.Contains(line, "\n") {
		t.Fatalf("%s: stderr %q, want one line", what, stderr)
	}
	for _, w := range words {
		if !strings.Contains(line, w) {
			t.Fatalf("%s: %q does not mention %q", what, line, w)
		}
	}
}

// TestIntegrationHijackedStateDir: uid 65534 pre-creates the victim's
// per-user directory and runs an ordinary provider in it. Neither the
// victim's snapsafectl (by default, or pointed at the directory), nor
// root's, nor the victim's own snapsafed uses it.
func TestIntegrationHijackedStateDir(t *testing.T) {
	testdevice.RequireRoot(t, "to run the attacker and the victim as uids 65534 and 65533")
	tmp := testuser.SharedTmp(t)
	env := userEnv(tmp)
	hijacked := filepath.Join(tmp, "snapsafe-65533") // the victim's default
	evil := startAs(t, attacker, env, hijacked, "--dir", hijacked)

	// By default the victim's client passes the directory over: it reaches
	// root's provider on /run/snapsafe if one runs, else none — never the
	// attacker's.
	out, errs, code := runAs(t, victim, env, "snapsafectl", "status", "--json")
	switch code {
	case exitNoProvider:
	case exitOK:
		var s statusJSON
		if err := json.Unmarshal([]byte(out), &s); err != nil {
			t.Fatal(err)
		}
		if s.ProviderPID == evil.Process.Pid {
			t.Fatalf("the victim's snapsafectl attached to uid 65534's provider (pid %d)", s.ProviderPID)
		}
	default:
		t.Fatalf("victim's default status exited %d: %s", code, errs)
	}

	// Pointed at it, the victim's and root's clients refuse: exit 1, one line.
	for _, cred := range []*syscall.Credential{victim, nil} { // nil: root
		out, errs, code := runAs(t, cred, env, "snapsafectl", "--dir", hijacked, "status", "--json")
		if code != exitError || out != "" {
			t.Fatalf("status --dir %s exited %d with %q, want 1 and nothing on stdout", hijacked, code, out)
		}
		wantOneLine(t, "status on the hijacked directory", errs, "untrusted", hijacked, "uid 65534")
		t.Logf("%s", strings.TrimSpace(errs))
	}

	// The victim's own provider refuses the directory too, even once the
	// attacker's provider is gone (the attacker still owns the directory,
	// so it could swap the page or the socket under the victim).
	evil.Process.Signal(syscall.SIGTERM)
	evil.Wait()
	before, _ := os.ReadDir(hijacked)
	_, errs, code = runAs(t, victim, env, "snapsafed", "--backend", "manual")
	if code != 1 {
		t.Fatalf("the victim's snapsafed on the hijacked default directory exited %d, want 1: %s", code, errs)
	}
	// Its log may come first; the error is the last line.
	lines := strings.Split(strings.TrimSpace(errs), "\n")
	last := lines[len(lines)-1]
	wantOneLine(t, "snapsafed on the hijacked directory", last, "snapsafed: untrusted", hijacked, "uid 65534", "0755")
	t.Logf("%s", last)
	if after, _ := os.ReadDir(hijacked); len(after) != len(before) {
		t.Fatalf("the refused provider changed the directory: %d entries, were %d", len(after), len(before))
	}
}

// TestIntegrationPerUserTempDir: without XDG_RUNTIME_DIR a non-root user's
// provider still makes and serves its per-user directory in the temporary
// directory, and that user's snapsafectl finds it by default.
func TestIntegrationPerUserTempDir(t *testing.T) {
	testdevice.RequireRoot(t, "to run as uid 65533")
	tmp := testuser.SharedTmp(t)
	env := userEnv(tmp)
	dir := filepath.Join(tmp, "snapsafe-65533")
	p := startAs(t, victim, env, dir)
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != victim.Uid || fi.Mode().Perm() != 0o755 {
		t.Fatalf("%s: owner %d mode %v, want uid %d and 0755", dir, st.Uid, fi.Mode().Perm(), victim.Uid)
	}
	out, errs, code := runAs(t, victim, env, "snapsafectl", "status", "--json")
	if code != 0 {
		t.Fatalf("default status exited %d: %s", code, errs)
	}
	var s statusJSON
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatal(err)
	}
	if s.ProviderPID != p.Process.Pid {
		t.Fatalf("default status reached pid %d, want the user's own provider %d", s.ProviderPID, p.Process.Pid)
	}

	// A restart reuses the page, which is 0444 and so not writable even
	// for its owner until the provider makes it so for the moment of the
	// open (through the directory's descriptor).
	p.Process.Signal(syscall.SIGTERM)
	if err := p.Wait(); err != nil {
		t.Fatalf("the user's provider exited with %v", err)
	}
	startAs(t, victim, env, dir)
	out, errs, code = runAs(t, victim, env, "snapsafectl", "status", "--json")
	if code != 0 {
		t.Fatalf("default status after the restart exited %d: %s", code, errs)
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil {
		t.Fatal(err)
	}
	if s.Generation != 2 {
		t.Fatalf("generation %d after the restart, want 2: the page was not reused", s.Generation)
	}
}

// TestIntegrationTraverseOnlyDir: a client needs only search permission on
// the state directory, as before the trust checks: root may make its
// directory 0711.
func TestIntegrationTraverseOnlyDir(t *testing.T) {
	testdevice.RequireRoot(t, "to run snapsafectl as uid 65534")
	dir := stateDir(t)
	startProvider(t, dir)
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	if _, errs, code := ctlAs(t, attacker, dir, "status"); code != 0 {
		t.Fatalf("status as uid 65534 on a 0711 directory exited %d: %s", code, errs)
	}
}
