package provider

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/snapsafe/snapsafe/runtime/internal/statedir"
	"github.com/snapsafe/snapsafe/runtime/internal/wire"
	"github.com/snapsafe/snapsafe/shm"
	"golang.org/x/sys/unix"
)

// BenchmarkBumpAckWait is the scale figure: n watchers are connected, and
// one operation is a bump (Provider.Bump) until an orchestrator wait,
// started on another connection right after it, returns 0 — that is,
// until every one of the n watchers has received its event and acked it.
//
// The watchers are raw SOCK_SEQPACKET sockets in a child process (see
// watcherProcess), driven by one goroutine that waits on all of them with
// epoll, reads each event and sends its ack at once: the client side costs
// a few syscalls per watcher, and none of its memory is the provider's.
//
// Reported besides ns/op: p50-ms and p99-ms of the operation, B/watcher
// (this process's heap and stacks, HeapInuse+StackInuse after GC, grown by
// connecting the n watchers and serving one bump to them, divided by n),
// the stacks' part of it (stack-B/watcher), goroutines/watcher, and the CPU
// time this process (cpu-ms/op) and the watchers' (client-cpu-ms/op) used
// per operation.
func BenchmarkBumpAckWait(b *testing.B) {
	for _, n := range []int{1000, 3500, 10000} {
		b.Run(fmt.Sprintf("watchers=%d", n), func(b *testing.B) { benchBumpAckWait(b, n) })
	}
}

func benchBumpAckWait(b *testing.B, n int) {
	raiseFDLimit(b, uint64(n+512))
	dir := b.TempDir()
	tp := startProvider(b, dir)
	sock := filepath.Join(dir, statedir.SocketFile)
	orch := dialRaw(b, sock)

	heap0, stack0, gor0 := providerMemory()
	cl := startWatcherProcess(b, sock, n)
	if s := tp.Status(); s.Watchers != n || s.Outdated != 0 {
		b.Fatalf("after connecting %d watchers: %d watchers, %d outdated", n, s.Watchers, s.Outdated)
	}

	iter := 0
	round := func() time.Duration {
		iter++
		start := time.Now()
		gen, err := tp.Bump(shm.ReasonForced, 0)
		if err != nil {
			b.Fatal(err)
		}
		if r, g := rawWait(b, orch, uint32(iter), gen); r != wire.WaitOK || g != gen {
			b.Fatalf("wait after bump %d: result %d, generation %d", gen, r, g)
		}
		return time.Since(start)
	}
	// One round outside the measurement, so that what serving a bump
	// leaves behind counts in the memory figure. After every round the
	// watchers have read every ack's reply (not measured), so that the
	// next bump's events go out at once rather than after a deferral.
	round()
	cl.settle(b, iter*n)
	heap1, stack1, gor1 := providerMemory()

	ds, ownCPU, clientCPU := measureRounds(b, cl, round, func() int { return iter * n })
	reportRounds(b, ds, ownCPU, clientCPU)
	perWatcher := func(after, before uint64) float64 { return float64(int64(after)-int64(before)) / float64(n) }
	b.ReportMetric(perWatcher(heap1+stack1, heap0+stack0), "B/watcher")
	b.ReportMetric(perWatcher(stack1, stack0), "stack-B/watcher")
	b.ReportMetric(float64(gor1-gor0)/float64(n), "goroutines/watcher")
}

// measureRounds runs round once per b.Loop and returns how long each took
// and the CPU time this process and the watchers' used in them. Between
// rounds (not measured) it waits until the watchers have read acks() ack
// replies in all.
func measureRounds(b *testing.B, cl *watcherProcess, round func() time.Duration, acks func() int) (ds []time.Duration, ownCPU, clientCPU time.Duration) {
	for b.Loop() {
		own, client := cpuTime(os.Getpid()), cpuTime(cl.cmd.Process.Pid)
		ds = append(ds, round())
		ownCPU += cpuTime(os.Getpid()) - own
		clientCPU += cpuTime(cl.cmd.Process.Pid) - client
		b.StopTimer()
		cl.settle(b, acks())
		b.StartTimer()
	}
	return ds, ownCPU, clientCPU
}

// reportRounds reports the percentiles of the rounds and the CPU time per
// round.
func reportRounds(b *testing.B, ds []time.Duration, ownCPU, clientCPU time.Duration) {
	slices.Sort(ds)
	pct := func(p int) float64 {
		i := (len(ds)*p + 99) / 100
		return float64(ds[max(i-1, 0)]) / 1e6
	}
	b.ReportMetric(pct(50), "p50-ms")
	b.ReportMetric(pct(99), "p99-ms")
	b.ReportMetric(float64(len(ds)), "rounds")
	b.ReportMetric(float64(ownCPU)/1e6/float64(len(ds)), "cpu-ms/op")
	b.ReportMetric(float64(clientCPU)/1e6/float64(len(ds)), "client-cpu-ms/op")
}

// BenchmarkBumpAckWaitFloor is BenchmarkBumpAckWait's round against no
// provider at all: a bare server that makes only the system calls the
// protocol asks of any provider — per watcher and round, SIOCOUTQ and a send
// for the event, a read of the ack and a send of its reply — from two
// threads, one sending the events while the other answers the acks, with
// the same watcher process. It is the floor this machine sets: the gap to
// BenchmarkBumpAckWait is the provider's own cost.
func BenchmarkBumpAckWaitFloor(b *testing.B) {
	for _, n := range []int{1000, 3500, 10000} {
		b.Run(fmt.Sprintf("watchers=%d", n), func(b *testing.B) { benchFloor(b, n) })
	}
}

func benchFloor(b *testing.B, n int) {
	raiseFDLimit(b, uint64(n+512))
	sock := filepath.Join(b.TempDir(), "floor.sock")
	lfd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	if err := unix.Bind(lfd, &unix.SockaddrUnix{Name: sock}); err != nil {
		b.Fatal(err)
	}
	if err := unix.Listen(lfd, 4096); err != nil {
		b.Fatal(err)
	}
	ep, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		b.Fatal(err)
	}
	var fds []int
	b.Cleanup(func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
		unix.Close(ep)
		unix.Close(lfd)
	})
	gen := uint64(1)
	accepted := make(chan error, 1)
	go func() {
		buf := make([]byte, wire.MaxMessage)
		for len(fds) < n {
			fd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
			if err == nil {
				fds = append(fds, fd)
				var m int
				if m, err = unix.Read(fd, buf); err == nil && m >= wire.HeaderSize {
					_, err = unix.Write(fd, wire.Encode(wire.WatchOK, binary.LittleEndian.Uint32(buf[4:]), wire.U64(gen)))
				}
			}
			if err != nil && !errors.Is(err, unix.EINTR) {
				accepted <- err
				return
			}
		}
		accepted <- nil
	}()
	cl := startWatcherProcess(b, sock, n)
	if err := <-accepted; err != nil {
		b.Fatal(err)
	}
	for _, fd := range fds {
		if err := unix.SetNonblock(fd, true); err != nil {
			b.Fatal(err)
		}
		if err := unix.EpollCtl(ep, unix.EPOLL_CTL_ADD, fd, &unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}); err != nil {
			b.Fatal(err)
		}
	}
	events := make([]unix.EpollEvent, 128)
	buf := make([]byte, 128)
	iter := 0
	round := func() time.Duration {
		iter++
		gen++
		msg := wire.Encode(wire.Generation, 0, wire.U64(gen))
		start := time.Now()
		sent := make(chan struct{})
		go func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			for _, fd := range fds {
				_, _ = unix.IoctlGetInt(fd, unix.SIOCOUTQ)
				_ = unix.Sendto(fd, msg, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, nil)
			}
			close(sent)
		}()
		for acks := 0; acks < n; {
			k, err := unix.EpollWait(ep, events, -1)
			if err != nil && !errors.Is(err, unix.EINTR) {
				b.Fatal(err)
			}
			for _, ev := range events[:max(k, 0)] {
				m, err := unix.Read(int(ev.Fd), buf)
				if err != nil || m < wire.HeaderSize+8 || wire.Type(buf[1]) != wire.Ack {
					continue
				}
				reply := wire.Encode(wire.AckOK, binary.LittleEndian.Uint32(buf[4:]), buf[wire.HeaderSize:m])
				_ = unix.Sendto(int(ev.Fd), reply, unix.MSG_DONTWAIT|unix.MSG_NOSIGNAL, nil)
				acks++
			}
		}
		<-sent
		return time.Since(start)
	}
	round()
	cl.settle(b, iter*n)
	ds, ownCPU, clientCPU := measureRounds(b, cl, round, func() int { return iter * n })
	reportRounds(b, ds, ownCPU, clientCPU)
}

// The watchers of BenchmarkBumpAckWait run in a process of their own, the
// test binary again (TestWatcherProcess): 10,000 connections need 20,000
// descriptors, both ends, more than one process may hold here (the hard
// RLIMIT_NOFILE is 20,000 and the benchmark may not raise it), and the
// provider's memory is then measured without them.
const (
	watcherSockEnv = "SNAPSAFE_TEST_WATCHER_SOCK" // the provider's control socket
	watcherNEnv    = "SNAPSAFE_TEST_WATCHER_N"    // how many watchers
)

// watcherProcess is the running helper. It connects its watchers, says
// "ready", then answers each "settle K" line on its stdin with "settled"
// once it has read K ack replies; it closes everything at EOF.
type watcherProcess struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

func startWatcherProcess(b *testing.B, sock string, n int) *watcherProcess {
	b.Helper()
	self, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^TestWatcherProcess$")
	cmd.Env = append(os.Environ(), watcherSockEnv+"="+sock, watcherNEnv+"="+strconv.Itoa(n))
	cmd.Stderr = os.Stderr
	w := &watcherProcess{cmd: cmd}
	if w.in, err = cmd.StdinPipe(); err != nil {
		b.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	w.out = bufio.NewScanner(out)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		w.in.Close()
		_ = cmd.Wait()
	})
	w.expect(b, "ready")
	return w
}

func (w *watcherProcess) expect(b *testing.B, want string) {
	b.Helper()
	for w.out.Scan() {
		switch line := w.out.Text(); {
		case line == want:
			return
		case strings.HasPrefix(line, "error: "):
			b.Fatalf("watcher process: %s", line)
		}
	}
	b.Fatalf("watcher process ended before %q: %v", want, w.out.Err())
}

// settle returns once the watchers have read acks ack replies in all.
func (w *watcherProcess) settle(b *testing.B, acks int) {
	b.Helper()
	if _, err := fmt.Fprintf(w.in, "settle %d\n", acks); err != nil {
		b.Fatal(err)
	}
	w.expect(b, "settled")
}

// TestWatcherProcess is BenchmarkBumpAckWait's watcher process; as a test
// it does nothing.
func TestWatcherProcess(t *testing.T) {
	sock := os.Getenv(watcherSockEnv)
	if sock == "" {
		return
	}
	n, _ := strconv.Atoi(os.Getenv(watcherNEnv))
	if err := runWatchers(sock, n); err != nil {
		fmt.Printf("error: %v\n", err)
	}
	os.Exit(0)
}

func runWatchers(sock string, n int) error {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err == nil && lim.Cur < uint64(n+64) {
		lim.Cur = min(lim.Max, uint64(n+64))
		_ = unix.Setrlimit(unix.RLIMIT_NOFILE, &lim)
	}
	cl, err := newEpollClients()
	if err != nil {
		return err
	}
	go cl.run()
	defer cl.stop()
	for i := range n {
		if err := cl.add(sock); err != nil {
			return fmt.Errorf("watcher %d of %d: %w", i+1, n, err)
		}
	}
	fmt.Println("ready")
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		k, ok := strings.CutPrefix(in.Text(), "settle ")
		if !ok {
			return fmt.Errorf("unknown request %q", in.Text())
		}
		acks, _ := strconv.ParseInt(k, 10, 64)
		for deadline := time.Now().Add(10 * time.Second); cl.acked.Load() < acks; {
			if time.Now().After(deadline) {
				return fmt.Errorf("%d of %d ack replies after 10 s", cl.acked.Load(), acks)
			}
			time.Sleep(50 * time.Microsecond)
		}
		fmt.Println("settled")
	}
	return nil
}

// cpuTime is the CPU time process pid has used: the sum of its threads'
// run times, in nanoseconds (/proc/PID/task/*/schedstat).
func cpuTime(pid int) time.Duration {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var sum time.Duration
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		f := strings.Fields(string(b))
		if len(f) > 0 {
			ns, _ := strconv.ParseInt(f[0], 10, 64)
			sum += time.Duration(ns)
		}
	}
	return sum
}

// providerMemory returns the heap and the stack memory in use after
// garbage collection, and the number of goroutines. Several collections, because
// each one only halves a stack that grew beyond what it uses.
func providerMemory() (heap, stack uint64, goroutines int) {
	var ms runtime.MemStats
	for range 4 {
		runtime.GC()
	}
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse, ms.StackInuse, runtime.NumGoroutine()
}

// raiseFDLimit makes sure this process may hold need descriptors, raising
// RLIMIT_NOFILE (above the hard limit only with CAP_SYS_RESOURCE). Short of
// that the benchmark is skipped, saying why.
func raiseFDLimit(b *testing.B, need uint64) {
	b.Helper()
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatal(err)
	}
	if lim.Cur >= need {
		return
	}
	set := unix.Rlimit{Cur: need, Max: max(need, lim.Max)}
	if err := unix.Setrlimit(unix.RLIMIT_NOFILE, &set); err != nil {
		b.Skipf("needs %d descriptors; RLIMIT_NOFILE is %d, hard %d, and raising it failed (it takes CAP_SYS_RESOURCE): %v", need, lim.Cur, lim.Max, err)
	}
}

// dialRaw connects a blocking SOCK_SEQPACKET socket to the provider.
func dialRaw(b *testing.B, sock string) int {
	b.Helper()
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: sock}); err != nil {
		unix.Close(fd)
		b.Fatal(err)
	}
	b.Cleanup(func() { unix.Close(fd) })
	return fd
}

// rawWait sends an orchestrator wait on the blocking socket fd and returns
// its result.
func rawWait(b *testing.B, fd int, id uint32, seen uint64) (wire.WaitResult, uint64) {
	b.Helper()
	if _, err := unix.Write(fd, wire.Encode(wire.Wait, id, wire.U64(seen))); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, wire.MaxMessage)
	for {
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil || n == 0 {
			b.Fatalf("reading the wait's reply: %d bytes, %v", n, err)
		}
		m, err := wire.Decode(buf[:n])
		if err != nil {
			b.Fatal(err)
		}
		if m.Type == wire.WaitDone && m.ID == id {
			return wire.DecodeWaitDone(m)
		}
	}
}

// epollClients are watchers on raw sockets, all served by one goroutine:
// it reads whatever arrives and answers every generation event with an
// ack of the generation it carries.
type epollClients struct {
	epfd, stopfd int
	fds          []int
	acked        atomic.Int64 // ack replies read
	done         chan struct{}
}

func newEpollClients() (*epollClients, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, err
	}
	stopfd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return nil, err
	}
	c := &epollClients{epfd: epfd, stopfd: stopfd, done: make(chan struct{})}
	return c, c.epollAdd(stopfd)
}

func (c *epollClients) epollAdd(fd int) error {
	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: int32(fd)}
	return unix.EpollCtl(c.epfd, unix.EPOLL_CTL_ADD, fd, &ev)
}

// add connects one watcher (blocking, until its watch reply) and hands it
// to the epoll loop.
func (c *epollClients) add(sock string) error {
	fd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	c.fds = append(c.fds, fd)
	if err := unix.Connect(fd, &unix.SockaddrUnix{Name: sock}); err != nil {
		return err
	}
	if _, err := unix.Write(fd, wire.Encode(wire.Watch, 1, nil)); err != nil {
		return err
	}
	buf := make([]byte, 64)
	n, err := unix.Read(fd, buf)
	if err != nil {
		return err
	}
	if m, err := wire.Decode(buf[:n]); err != nil || m.Type != wire.WatchOK {
		return fmt.Errorf("watch reply %+v, %v", m, err)
	}
	if err := unix.SetNonblock(fd, true); err != nil {
		return err
	}
	return c.epollAdd(fd)
}

func (c *epollClients) run() {
	defer close(c.done)
	events := make([]unix.EpollEvent, 512)
	buf := make([]byte, 64)
	ack := wire.Encode(wire.Ack, 2, wire.U64(0))
	for {
		k, err := unix.EpollWait(c.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return
		}
		for _, ev := range events[:k] {
			fd := int(ev.Fd)
			if fd == c.stopfd {
				return
			}
			n, err := unix.Read(fd, buf)
			switch {
			case errors.Is(err, unix.EAGAIN), errors.Is(err, unix.EINTR):
				continue
			case err != nil || n == 0:
				_ = unix.EpollCtl(c.epfd, unix.EPOLL_CTL_DEL, fd, nil)
				continue
			case n < wire.HeaderSize:
				continue
			}
			switch wire.Type(buf[1]) {
			case wire.Generation:
				copy(ack[wire.HeaderSize:], buf[wire.HeaderSize:n])
				_, _ = unix.Write(fd, ack)
			case wire.AckOK:
				c.acked.Add(1)
			}
		}
	}
}

func (c *epollClients) stop() {
	_, _ = unix.Write(c.stopfd, binary.LittleEndian.AppendUint64(nil, 1))
	<-c.done
	for _, fd := range c.fds {
		unix.Close(fd)
	}
	unix.Close(c.stopfd)
	unix.Close(c.epfd)
}
