package testprovider

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"

	"github.com/snapsafe/snapsafe/internal/testuser"
	"github.com/snapsafe/snapsafe/runtime/provider"
)

// childEnv, in a test binary's environment, makes it a provider on the
// directory it names instead of running tests (see StartAs).
const childEnv = "SNAPSAFE_TESTPROVIDER_CHILD_DIR"

func init() {
	if dir := os.Getenv(childEnv); dir != "" {
		os.Exit(runChild(dir))
	}
}

// runChild runs a provider on dir, prints its pid on stdout once it is
// ready, and stops when stdin closes (the test ended, or died).
func runChild(dir string) int {
	p, err := provider.New(provider.Config{Dir: dir, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	select {
	case <-p.Ready():
	case err := <-done:
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	fmt.Println(os.Getpid())
	_, _ = io.Copy(io.Discard, os.Stdin)
	cancel()
	if err := <-done; err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return 0
}

// Process is a provider running in a child process as another user.
type Process struct {
	Pid   int
	cmd   *exec.Cmd
	stdin io.Closer
}

// StartAs runs a provider on dir in a child process with cred's user and
// groups — a provider of another local user, as the trust tests need one —
// and returns once it is ready. It stops at the end of the test. It needs
// root. The child is a copy of the test binary, placed where any user may
// run it.
func StartAs(t testing.TB, cred *syscall.Credential, dir string) *Process {
	t.Helper()
	exe := testuser.Executable(t)
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), childEnv+"="+dir)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting a provider as uid %d: %v", cred.Uid, err)
	}
	p := &Process{cmd: cmd, stdin: stdin}
	t.Cleanup(func() {
		stdin.Close()
		_ = cmd.Wait()
	})
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		stdin.Close()
		_ = cmd.Wait()
		t.Fatalf("provider as uid %d on %s did not start: %v: %s", cred.Uid, dir, err, stderr.String())
	}
	if _, err := fmt.Sscan(line, &p.Pid); err != nil {
		t.Fatalf("provider as uid %d printed %q, want its pid", cred.Uid, line)
	}
	return p
}
