// Command snapsafed is the snapsafe provider: it turns VM-restore events
// into a monotonically increasing generation, published in a shared
// read-only page, and coordinates the processes that must adapt.
//
// It runs in the foreground, logs to stderr and stops cleanly on SIGINT or
// SIGTERM. See README.md for the flags.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/snapsafe/snapsafe/backend"
	"github.com/snapsafe/snapsafe/backend/vmclock"
	"github.com/snapsafe/snapsafe/runtime/provider"
	"github.com/snapsafe/snapsafe/runtime/provider/hostapi"
)

func main() {
	os.Exit(run(os.Args[1:]))
}

// isSet reports whether the flag name was given on the command line.
func isSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

func run(args []string) int {
	fs := flag.NewFlagSet("snapsafed", flag.ContinueOnError)
	dir := fs.String("dir", "", "state directory (default $SNAPSAFE_DIR, /run/snapsafe for root, else $XDG_RUNTIME_DIR/snapsafe)")
	source := fs.String("backend", "auto", "event source: auto, acpi, vmclock or manual")
	synthetic := fs.Bool("accept-synthetic", false, "also count root-written synthetic uevents on the VMGENID device (for tests)")
	group := fs.String("bump-group", "", "group whose members may force bumps (besides root and CAP_CHECKPOINT_RESTORE)")
	var hostListen listFlag
	fs.Var(&hostListen, "host-listen", "serve the host endpoint (docs/host-api.md) on tcp:HOST:PORT, unix:PATH or vsock:PORT; repeatable")
	hostToken := fs.String("host-token-file", "", "file holding the bearer token that lets a peer other than the host's vsock push restores (mode 0600)")
	trackGroup := fs.String("track-group", "", "only root, the provider's user and members of this group are tracked watchers (hold up waits); default: every watcher")
	hooksDir := fs.String("hooks-dir", provider.DefaultHooksDir, "run this directory's executables, in lexical order, on every new generation after the start-up one (the default only when it exists; \"\" disables)")
	hookTimeout := fs.Duration("hook-timeout", provider.DefaultHookTimeout, "kill a restore hook, with its process group, that runs longer than this")
	vmclockPath := fs.String("vmclock-path", vmclock.DefaultPath, "VMClock device for the vmclock backend")
	// Hidden from -h: for tests only. It adds one exact kernel record
	// (facility 0, "<LEVEL>TEXT" as dmesg -r prints it) that also counts as
	// a restore; the vmgenid driver's fork record still counts, and
	// nothing a process can forge matches either.
	kmsgMatch := fs.String(testKmsgMatch, "", "for tests only: also count this kernel log record, <LEVEL>TEXT, as a restore")
	level := fs.String("log-level", "info", "log level: debug, info, warn or error")
	maxClients := fs.Int("max-clients", provider.DefaultMaxClients, "connections of all users together")
	maxPerUID := fs.Int("max-clients-per-uid", provider.DefaultMaxClientsPerUID, "connections of one user other than root and the provider's")
	reserved := fs.Int("reserved-clients", provider.DefaultReservedClients, "connections only root and the provider's user may take (at most a quarter of --max-clients by default)")
	regionPerUID := fs.Int("max-region-bytes-per-uid", provider.DefaultMaxRegionBytesPerUID, "wipe-region bytes of one user other than root and the provider's")
	restartGrace := fs.Duration("restart-grace", provider.DefaultRestartGrace, "how long waits after a start wait for the previous provider's watchers to register again (0: not at all)")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: snapsafed [flags]")
		printFlags(fs)
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "snapsafed: unexpected argument %q: snapsafed takes only flags (see -h)\n", fs.Arg(0))
		return 2
	}
	switch *source {
	case "auto", "acpi", "vmclock", "manual":
	default:
		fmt.Fprintf(os.Stderr, "snapsafed: unknown --backend %q: use auto, acpi, vmclock or manual\n", *source)
		return 2
	}
	var lvl slog.Level
	if err := lvl.UnmarshalText([]byte(*level)); err != nil {
		fmt.Fprintf(os.Stderr, "snapsafed: bad --log-level %q: use debug, info, warn or error\n", *level)
		return 2
	}
	for _, b := range []struct {
		name string
		v    int
	}{{"max-clients", *maxClients}, {"max-clients-per-uid", *maxPerUID}, {"reserved-clients", *reserved}, {"max-region-bytes-per-uid", *regionPerUID}} {
		if b.v < 1 {
			fmt.Fprintf(os.Stderr, "snapsafed: --%s %d: must be at least 1\n", b.name, b.v)
			return 2
		}
	}
	if *restartGrace < 0 {
		fmt.Fprintf(os.Stderr, "snapsafed: --restart-grace %v: must be 0 or more\n", *restartGrace)
		return 2
	}
	if isSet(fs, "reserved-clients") && *reserved >= *maxClients {
		fmt.Fprintf(os.Stderr, "snapsafed: --reserved-clients %d: must be less than --max-clients (%d)\n", *reserved, *maxClients)
		return 2
	}
	if *hookTimeout <= 0 {
		fmt.Fprintf(os.Stderr, "snapsafed: --hook-timeout %v: must be positive\n", *hookTimeout)
		return 2
	}
	if !isSet(fs, "hooks-dir") {
		// The default directory counts only when it exists; a directory
		// named on the command line is used (and reported) even if not.
		if _, err := os.Lstat(*hooksDir); err != nil {
			*hooksDir = ""
		}
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: lvl}))

	src, err := backend.Select(*source, backend.Options{
		AcceptSynthetic: *synthetic,
		KmsgMatch:       *kmsgMatch,
		VMClockPath:     *vmclockPath,
		Logger:          log,
	})
	if err != nil {
		fmt.Fprintf(os.Stderr, "snapsafed: --backend %s: %v\n", *source, err)
		return 1
	}
	defer src.Close()
	if info := src.Info(); info.DetectsRestores {
		log.Info("event source", "backend", src.Name(), "detects_restores", true, "why", info.Why)
	} else {
		log.Warn("event source: restores will not be detected", "backend", src.Name(), "detects_restores", false, "why", info.Why)
	}
	if *hostToken != "" && len(hostListen) == 0 {
		fmt.Fprintln(os.Stderr, "snapsafed: --host-token-file needs --host-listen: name where the host endpoint listens")
		return 2
	}
	var host *hostapi.Server
	if len(hostListen) > 0 {
		if host, err = hostapi.New(hostapi.Config{Listen: hostListen, TokenFile: *hostToken, Logger: log}); err != nil {
			fmt.Fprintf(os.Stderr, "snapsafed: %v\n", err)
			return 1
		}
	}
	cfg := provider.Config{Dir: *dir, Source: src, BumpGroup: *group, TrackGroup: *trackGroup, Logger: log,
		HooksDir: *hooksDir, HookTimeout: *hookTimeout,
		MaxClients: *maxClients, MaxClientsPerUID: *maxPerUID, MaxRegionBytesPerUID: *regionPerUID,
		RestartGrace: *restartGrace}
	if *restartGrace == 0 {
		cfg.RestartGrace = -1 // the Config's 0 is the default
	}
	if host != nil {
		cfg.OnAdapted = host.ObserveAdapt
	}
	if isSet(fs, "reserved-clients") {
		// Unset, the reserve follows --max-clients (a quarter of it at most).
		cfg.ReservedClients = *reserved
	}
	p, err := provider.New(cfg)
	if errors.Is(err, provider.ErrInvalid) {
		fmt.Fprintf(os.Stderr, "snapsafed: %v\n", err)
		return 2
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "snapsafed: %v\n", err)
		return 1
	}
	defer p.Close()

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	select {
	case <-p.Ready():
	case err := <-done:
		log.Error("provider failed", "err", err)
		return 1
	}
	// The host endpoint answers only once the page is published; it stops
	// with the provider (ctx), and a failing endpoint stops the provider.
	hostDone := make(chan error, 1)
	if host != nil {
		go func() { hostDone <- host.Serve(ctx, p) }()
	}
	if err := sdNotify("READY=1"); err != nil {
		log.Warn("telling the service manager we are ready", "err", err)
	}
	select {
	case err = <-done:
		stop()
		if host != nil {
			<-hostDone // ctx is done: the endpoint finishes its requests and stops
		}
	case err = <-hostDone:
		log.Error("host endpoint failed", "err", err)
		stop()
		<-done
		return 1
	}
	_ = sdNotify("STOPPING=1")
	if err != nil {
		log.Error("provider failed", "err", err)
		return 1
	}
	return 0
}

// testKmsgMatch is the test-only flag that -h does not list.
const testKmsgMatch = "test-kmsg-match"

// printFlags prints the defaults of fs's flags, except the test-only one.
func printFlags(fs *flag.FlagSet) {
	shown := flag.NewFlagSet(fs.Name(), flag.ContinueOnError)
	shown.SetOutput(fs.Output())
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name != testKmsgMatch {
			shown.Var(f.Value, f.Name, f.Usage)
			shown.Lookup(f.Name).DefValue = f.DefValue
		}
	})
	shown.PrintDefaults()
}

// listFlag is a repeatable string flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }
