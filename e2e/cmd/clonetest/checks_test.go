package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/snapsafe/snapsafe/e2e/console"
	"github.com/snapsafe/snapsafe/runtime/api"
	"github.com/snapsafe/snapsafe/runtime/provider/hostapi"
)

// loadRun builds the observations of a real run of the vmgenid scenario
// (testdata: Debian 6.1 guest on QEMU 7.2 TCG) the way the driver does; the
// generation IDs and host delays are from that run's log. That run predates
// the host endpoint: the host's figures are those of a later run on the
// same kernel.
func loadRun(t *testing.T) *observed {
	t.Helper()
	o := loadConsoles(t, "testdata")
	o.vmgenid = true
	o.sourceGenID = "10a35a2a-4252-427d-9775-e315726a0af8"
	o.sourceStatus = api.Status{Generation: 1, Source: api.SourceInfo{Name: "acpi", DetectsRestores: true},
		VMGenID: api.VMGenID{Devices: []api.VMGenIDDevice{{}}}}
	for i, c := range []clone{
		{name: "clone-a", genID: "6249df17-8795-45d8-8c72-036a985e4d09", bumpSeen: 141 * time.Millisecond,
			host: hostRun{port: 41439, waitCode: 200, wait: hostapi.WaitResponse{Generation: 2, Adapted: true, WaitedSeconds: 0.169}, adapted: 668 * time.Millisecond}},
		{name: "clone-b", genID: "381d059f-ae15-4bf4-b09a-5f52b43c26c7", bumpSeen: 141 * time.Millisecond,
			host: hostRun{port: 35317, waitCode: 200, wait: hostapi.WaitResponse{Generation: 2, Adapted: true}, adapted: 499 * time.Millisecond}},
	} {
		c.lines = o.clones[i].lines
		o.clones[i] = c
	}
	return o
}

// loadPushRun builds the observations of a real run of the host-push
// scenario (testdata/host-push: Debian 6.1 guest on QEMU 7.2 TCG, no
// VMGENID device); the host's figures are from that run's log.
func loadPushRun(t *testing.T) *observed {
	t.Helper()
	o := loadConsoles(t, filepath.Join("testdata", "host-push"))
	o.sourceStatus = api.Status{Generation: 1, Source: api.SourceInfo{Name: "manual"}, VMGenID: api.VMGenID{Devices: []api.VMGenIDDevice{}}}
	reseed := "forced by the provider (RNDRESEEDCRNG) with 32 bytes of host entropy and 32 of rdrand"
	for i, x := range []struct {
		port              int
		bump, push, adapt time.Duration
		waited            float64
	}{
		{37003, 447 * time.Millisecond, 417 * time.Millisecond, 771 * time.Millisecond, 0.223},
		{45139, 921 * time.Millisecond, 915 * time.Millisecond, 1016 * time.Millisecond, 0},
	} {
		c := &o.clones[i]
		c.bumpSeen = x.bump
		c.host = hostRun{port: x.port, refusedCode: 403, pushed: true, entropy: 32,
			restoreCode: 200, restore: hostapi.RestoreResponse{OK: true, Generation: 2, KernelReseeded: true, KernelReseed: reseed}, restored: x.push,
			waitCode: 200, wait: hostapi.WaitResponse{Generation: 2, Adapted: true, WaitedSeconds: x.waited}, adapted: x.adapt}
	}
	return o
}

// loadConsoles reads the consoles of a run, source.console, clone-a.console
// and clone-b.console in dir, and finds the snapshot point in them.
func loadConsoles(t *testing.T, dir string) *observed {
	t.Helper()
	read := func(name string) []console.Line {
		data, err := os.ReadFile(filepath.Join(dir, name+".console"))
		if err != nil {
			t.Fatal(err)
		}
		return console.Parse(data)
	}
	o := &observed{sourceLines: read("source")}
	recs, err := clientRecords(o.sourceLines, -1)
	if err != nil {
		t.Fatal(err)
	}
	o.sourceLast = recs[len(recs)-1]
	ready, err := waiterRecords(o.sourceLines, console.WaiterReady)
	if err != nil || len(ready) != 1 {
		t.Fatalf("ready records %v, %v", ready, err)
	}
	o.sourceReady = ready[0]
	o.clones = []clone{{name: "clone-a", lines: read("clone-a")}, {name: "clone-b", lines: read("clone-b")}}
	return o
}

func TestChecksPassOnRealRun(t *testing.T) {
	for _, x := range []struct {
		scenario string
		load     func(*testing.T) *observed
	}{{"vmgenid", loadRun}, {"host-push", loadPushRun}} {
		t.Run(x.scenario, func(t *testing.T) {
			o := x.load(t)
			i := slices.IndexFunc(scenarios, func(sc scenario) bool { return sc.name == x.scenario })
			for _, c := range scenarios[i].checks {
				if err := c.fn(o); err != nil {
					t.Errorf("%s: %v", c.name, err)
				}
			}
			if o.sourceReady != (console.Waiter{Event: console.WaiterReady, Gen: 1, Watchers: 1}) {
				t.Errorf("source ready = %+v", o.sourceReady)
			}
		})
	}
}

// editLines returns a copy of lines with f applied to each line of program
// prog (a nil result drops the line); i counts that program's lines.
func editLines(lines []console.Line, prog string, f func(i int, l console.Line) *console.Line) []console.Line {
	var out []console.Line
	i := 0
	for _, l := range lines {
		if l.Prog != prog {
			out = append(out, l)
			continue
		}
		if e := f(i, l); e != nil {
			out = append(out, *e)
		}
		i++
	}
	return out
}

// replaceField returns the line with the value of key replaced.
func replaceField(l console.Line, key, value string) *console.Line {
	f := strings.Fields(l.Text)
	for i, kv := range f {
		if strings.HasPrefix(kv, key+"=") {
			f[i] = key + "=" + value
		}
	}
	l.Text = strings.Join(f, " ")
	return &l
}

// field returns the value of key in a key=value line.
func field(l console.Line, key string) string {
	for _, kv := range strings.Fields(l.Text) {
		if v, ok := strings.CutPrefix(kv, key+"="); ok {
			return v
		}
	}
	return ""
}

// Line numbers in the testdata clones: client line 0 still shows
// generation 1 (drawn before the bump), lines 1 on show generation 2.
func TestChecksFail(t *testing.T) {
	for _, tc := range []struct {
		name  string
		edit  func(o *observed)
		check func(*observed) error
		want  string
	}{
		{
			"a clone's control bytes differ",
			func(o *observed) {
				o.clones[1].lines = editLines(o.clones[1].lines, "client", func(i int, l console.Line) *console.Line {
					if i == 7 {
						return replaceField(l, "control", strings.Repeat("ab", 16))
					}
					return &l
				})
			},
			checkControlIdentical, "PROBLEM NOT REPRODUCED",
		},
		{
			"a clone printed too little",
			func(o *observed) {
				o.clones[0].lines = editLines(o.clones[0].lines, "client", func(i int, l console.Line) *console.Line {
					if i >= 10 {
						return nil
					}
					return &l
				})
			},
			checkControlIdentical, "10 client lines after the snapshot point, want at least 20",
		},
		{
			"a clone's generator repeats",
			func(o *observed) {
				for i := range o.clones {
					var first string
					o.clones[i].lines = editLines(o.clones[i].lines, "client", func(j int, l console.Line) *console.Line {
						if j == 0 {
							first = field(l, "control")
						}
						if j == 3 {
							return replaceField(l, "control", first)
						}
						return &l
					})
				}
			},
			checkControlIdentical, "repeats",
		},
		{
			"one clone",
			func(o *observed) { o.clones = o.clones[:1] },
			checkControlIdentical, "1 clones, want at least 2",
		},
		{
			"one clone, for csprng",
			func(o *observed) { o.clones = o.clones[:1] },
			checkCSPRNGDiverges, "1 clones, want at least 2",
		},
		{
			"a garbled client line",
			func(o *observed) {
				o.clones[0].lines = editLines(o.clones[0].lines, "client", func(i int, l console.Line) *console.Line {
					if i == 2 {
						l.Text = l.Text[:20] + "[    3.5] oops"
					}
					return &l
				})
			},
			checkControlIdentical, "is not key=value",
		},
		{
			"no fork record",
			func(o *observed) {
				o.clones[1].lines = slices.DeleteFunc(slices.Clone(o.clones[1].lines), func(l console.Line) bool {
					return strings.HasSuffix(l.Text, forkMessage)
				})
			},
			checkForkRecords, "clone-b: 0 kernel records",
		},
		{
			"a fork record written by a process",
			func(o *observed) {
				o.clones[0].lines = editLines(o.clones[0].lines, "kmsg", func(_ int, l console.Line) *console.Line {
					if strings.HasSuffix(l.Text, forkMessage) {
						l.Text = "13" + l.Text[1:] // facility 1, level 5
					}
					return &l
				})
			},
			checkForkRecords, "clone-a: 0 kernel records",
		},
		{
			"two fork records",
			func(o *observed) {
				for _, l := range o.clones[0].lines {
					if strings.HasSuffix(l.Text, forkMessage) {
						o.clones[0].lines = append(slices.Clone(o.clones[0].lines), l)
						break
					}
				}
			},
			checkForkRecords, "clone-a: 2 kernel records",
		},
		{
			"a clone kept the source's generation ID",
			func(o *observed) { o.clones[1].genID = o.sourceGenID },
			checkGenerationIDs, "clone-b has the generation ID of the source",
		},
		{
			"two clones share a generation ID",
			func(o *observed) { o.clones[1].genID = o.clones[0].genID },
			checkGenerationIDs, "clone-b has the generation ID of clone-a",
		},
		{
			"no bump",
			func(o *observed) {
				o.clones[1].lines = editLines(o.clones[1].lines, "waiter", func(_ int, l console.Line) *console.Line {
					if strings.HasPrefix(l.Text, "bump ") {
						return nil
					}
					return &l
				})
			},
			checkBump("acpi", maxBumpDelay), "clone-b: the provider bumped 0 times after the restore, want 1",
		},
		{
			"a forced bump",
			func(o *observed) {
				o.clones[0].lines = editLines(o.clones[0].lines, "waiter", func(_ int, l console.Line) *console.Line {
					return replaceField(l, "reason", "forced")
				})
			},
			checkBump("acpi", maxBumpDelay), `reason "forced", want acpi`,
		},
		{
			"a bump not above the source's generation",
			func(o *observed) { o.sourceReady.Gen = 2 },
			checkBump("acpi", maxBumpDelay), "not above the source's 2",
		},
		{
			"a late bump",
			func(o *observed) { o.clones[1].bumpSeen = 1500 * time.Millisecond },
			checkBump("acpi", maxBumpDelay), "clone-b: the bump reached the console 1.5s after cont, want within 1s",
		},
		{
			"the clones' csprng output is the same after the bump",
			func(o *observed) {
				var a []string
				editLines(o.clones[0].lines, "client", func(_ int, l console.Line) *console.Line {
					a = append(a, field(l, "csprng"))
					return &l
				})
				o.clones[1].lines = editLines(o.clones[1].lines, "client", func(i int, l console.Line) *console.Line {
					if i == 5 {
						return replaceField(l, "csprng", a[5])
					}
					return &l
				})
			},
			checkCSPRNGDiverges, "(generation 2) and by clone-b at T=",
		},
		{
			"a clone repeats the source's csprng output",
			func(o *observed) {
				o.clones[0].lines = editLines(o.clones[0].lines, "client", func(i int, l console.Line) *console.Line {
					if i == 4 {
						return replaceField(l, "csprng", o.sourceLast.CSPRNG)
					}
					return &l
				})
			},
			checkCSPRNGDiverges, "was printed by the source at T=4.264388165s and by clone-a at T=",
		},
		{
			"a client without the provider",
			func(o *observed) {
				o.clones[1].lines = editLines(o.clones[1].lines, "client", func(_ int, l console.Line) *console.Line {
					return replaceField(l, "mode", "kernel")
				})
			},
			checkCSPRNGDiverges, "clone-b: client line T=",
		},
		{
			"too few lines after the bump",
			func(o *observed) {
				o.clones[0].lines = editLines(o.clones[0].lines, "client", func(i int, l console.Line) *console.Line {
					if i > 5 {
						return replaceField(l, "gen", "1")
					}
					return &l
				})
			},
			checkCSPRNGDiverges, "clone-a: 5 client lines after the bump, want at least 10",
		},
		{
			"the wait timed out",
			func(o *observed) {
				o.clones[1].lines = editLines(o.clones[1].lines, "waiter", func(_ int, l console.Line) *console.Line {
					return replaceField(l, "exit", "3")
				})
			},
			checkWait, "clone-b: snapsafectl wait after the bump to 2 exited 3, want 0",
		},
		{
			"no wait result",
			func(o *observed) {
				o.clones[0].lines = editLines(o.clones[0].lines, "waiter", func(_ int, l console.Line) *console.Line {
					if strings.HasPrefix(l.Text, "wait ") {
						return nil
					}
					return &l
				})
			},
			checkWait, "clone-a: 0 results of snapsafectl wait, want 1",
		},
		{
			"no watcher at the snapshot",
			func(o *observed) { o.sourceReady.Watchers = 0 },
			checkWait, "no watcher was registered at the snapshot",
		},
		{
			"the watcher was not told",
			func(o *observed) {
				o.clones[1].lines = editLines(o.clones[1].lines, "watcher", func(int, console.Line) *console.Line { return nil })
			},
			checkWait, "clone-b: the watcher printed generations [], not 2",
		},
		{
			"a bump stamped before the record",
			func(o *observed) {
				o.clones[0].lines = editLines(o.clones[0].lines, "waiter", func(_ int, l console.Line) *console.Line {
					return replaceField(l, "mono", "4300000000")
				})
			},
			checkLatencies, "clone-a: the page's bump (monotonic 4.3s) precedes the fork record",
		},
		{
			"no clock syncs",
			func(o *observed) {
				o.sourceLines = editLines(o.sourceLines, "kmsg", func(_ int, l console.Line) *console.Line {
					if strings.Contains(l.Text, console.SyncPrefix) {
						return nil
					}
					return &l
				})
			},
			checkLatencies, "clone-a: too few clock syncs",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := loadRun(t)
			tc.edit(o)
			err := tc.check(o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestMeasure(t *testing.T) {
	o := loadRun(t)
	l, err := measure(o, o.clones[0])
	if err != nil {
		t.Fatal(err)
	}
	if l.record.Seq != 366 || l.record.Time != 4321520*time.Microsecond {
		t.Errorf("record = %+v", l.record)
	}
	// The guest's clocks stood still while it was stopped: the record lies
	// between the source's last line and the clone's first.
	recs, err := clientRecords(o.clones[0].lines, -1)
	if err != nil {
		t.Fatal(err)
	}
	if !(o.sourceLast.T < l.recordT && l.recordT < recs[0].T) {
		t.Errorf("record at T=%v, not between %v and %v", l.recordT, o.sourceLast.T, recs[0].T)
	}
	if l.resumeToRecord != l.recordT-o.sourceLast.T {
		t.Errorf("resumeToRecord = %v", l.resumeToRecord)
	}
	// The page's monotonic_ns of the bump, from the waiter's record.
	if want := 4355851515*time.Nanosecond - l.recordT; l.recordToBump != want {
		t.Errorf("recordToBump = %v, want %v", l.recordToBump, want)
	}
	// Client line 0 still shows generation 1; line 1 is the first reseeded.
	if l.firstReseeded != recs[1] || l.recordToOutput != recs[1].T-l.recordT {
		t.Errorf("first reseeded %+v after %v, want %+v", l.firstReseeded, l.recordToOutput, recs[1])
	}
}

func TestCloneDone(t *testing.T) {
	o := loadRun(t)
	lines := o.clones[0].lines
	if !cloneDone(o, lines) {
		t.Error("a complete clone is not done")
	}
	without := func(prefix string) []console.Line {
		return slices.DeleteFunc(slices.Clone(lines), func(l console.Line) bool { return strings.HasPrefix(l.Text, prefix) })
	}
	for what, l := range map[string][]console.Line{
		"the fork record":   without("5,366,"),
		"the wait's result": without("wait "),
		"the clock sync":    without("14,367,"),
		"enough client lines": editLines(lines, "client", func(i int, l console.Line) *console.Line {
			if i >= minAfter-1 {
				return nil
			}
			return &l
		}),
		"enough reseeded lines": editLines(lines, "client", func(i int, l console.Line) *console.Line {
			if i >= minReseeded {
				return replaceField(l, "gen", "1")
			}
			return &l
		}),
	} {
		if len(l) == len(lines) && what != "enough reseeded lines" {
			t.Fatalf("removing %s removed nothing", what)
		}
		if cloneDone(o, l) {
			t.Errorf("done without %s", what)
		}
	}
}

func TestSummary(t *testing.T) {
	var b bytes.Buffer
	printSummary(&b, "6.1.0-56-amd64", loadRun(t))
	out := b.String()
	for _, want := range []string{
		"summary, guest kernel 6.1.0-56-amd64, scenario vmgenid",
		"generation: source 1 at the snapshot; clone-a 1 -> 2 (reason acpi); clone-b 1 -> 2 (reason acpi)",
		"snapsafectl wait after the bump: clone-a exit 0, clone-b exit 0",
		"uevents after the resume: clone-a none, clone-b none",
		"cont -> bump on the console (host)        141ms       141ms",
		"cont -> GET /v1/wait adapted (host)       668ms       499ms",
		"GET /v1/wait?after=1&timeout=30s after cont: clone-a on 127.0.0.1:41439 200 OK adapted=true at generation 2",
		"fork record -> page bump (guest)",
		// The first line after the resume came before the bump: the same
		// in both clones; then they differ, and the control never does.
		"+1   1   0f04c9d5b9bf9e46a5fda1e78fe5c13f 1   0f04c9d5b9bf9e46a5fda1e78fe5c13f same*   ff1d9e41db7465b1f0fee533d0f8522f identical",
		"+2   2   9018d500a1ca58a74e21cc8eaac5c68d 2   8802a046c44392d6a5ef19979c5ea6ff differ  4178138b09682436c4886a91f5035a7e identical",
		"+4   2   ",
		"* drawn with generation 1, after the resume but before the provider's bump",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "+5 ") || strings.Contains(out, "cannot summarize") {
		t.Errorf("summary:\n%s", out)
	}
}

func TestSummaryUevent(t *testing.T) {
	o := loadRun(t)
	// As a 6.8 kernel would send it on a restore.
	ev := "ACTION=change DEVPATH=/devices/platform/QEMUVGID:00 SUBSYSTEM=platform NEW_VMGENID=1"
	o.clones[1].lines = append(slices.Clone(o.clones[1].lines), console.Line{Prog: "uevent", Text: ev}, console.Line{Prog: "uevent", Text: "exited with status 0"})
	var b bytes.Buffer
	printSummary(&b, "6.8", o)
	if want := "uevents after the resume: clone-a none, clone-b " + ev + "\n"; !strings.Contains(b.String(), want) {
		t.Errorf("summary lacks %q:\n%s", want, b.String())
	}
}

// The host's observations, on the runs of both scenarios.
func TestHostChecksFail(t *testing.T) {
	for _, tc := range []struct {
		name  string
		load  func(*testing.T) *observed
		edit  func(o *observed)
		check func(*observed) error
		want  string
	}{
		{
			"the endpoint's generation is not the waiter's", loadRun,
			func(o *observed) { o.sourceStatus.Generation = 3 },
			checkSourceStatus, "the source's endpoint said generation 3, its waiter 1",
		},
		{
			"no status read", loadRun,
			func(o *observed) { o.sourceStatus = api.Status{} },
			checkSourceStatus, "said generation 0",
		},
		{
			"the manual backend with a VMGENID device", loadRun,
			func(o *observed) { o.sourceStatus.Source = api.SourceInfo{Name: "manual"} },
			checkSourceStatus, "with a VMGENID device: backend manual (detects restores: false)",
		},
		{
			"a VMGENID device in the device-less scenario", loadPushRun,
			func(o *observed) {
				o.sourceStatus.Source = api.SourceInfo{Name: "acpi", DetectsRestores: true}
				o.sourceStatus.VMGenID.Devices = []api.VMGenIDDevice{{}}
			},
			checkSourceStatus, "without a VMGENID device: backend acpi (detects restores: true), 1 devices probed",
		},
		{
			"the wait never adapted", loadRun,
			func(o *observed) {
				o.clones[1].host.waitCode = 504
				o.clones[1].host.wait = hostapi.WaitResponse{Generation: 2, Outdated: []hostapi.Outdated{{Label: "watch", PID: 99, Comm: "snapsafectl"}}}
			},
			checkHostWait, "clone-b: GET /v1/wait?after=1: 504 Gateway Timeout, adapted=false at generation 2, outdated [{Label:watch PID:99 Comm:snapsafectl}]: the clone never adapted within 30s",
		},
		{
			"the wait adapted at the snapshot's generation", loadRun,
			func(o *observed) { o.clones[0].host.wait.Generation = 1 },
			checkHostWait, "clone-a: GET /v1/wait?after=1: adapted at generation 1, not above 1",
		},
		{
			"the wait's generation is not the page's", loadPushRun,
			func(o *observed) { o.clones[0].host.wait.Generation = 3 },
			checkHostWait, "clone-a: GET /v1/wait said generation 3, the waiter saw the page bump to 2",
		},
		{
			"no answer to the wait", loadRun,
			func(o *observed) { o.clones[0].host = hostRun{waitErr: errors.New("connection refused")} },
			checkHostWait, "clone-a: GET /v1/wait?after=1: connection refused",
		},
		{
			"no fork record expected", loadPushRun,
			func(o *observed) { o.clones[1].lines = loadRun(t).clones[1].lines },
			checkNoForkRecords, "clone-b: 1 kernel records",
		},
		{
			"a wrong token accepted", loadPushRun,
			func(o *observed) { o.clones[0].host.refusedCode = 200 },
			checkHostRefused, "clone-a: POST /v1/restore with a wrong token: 200 OK (<nil>), want 403 Forbidden",
		},
		{
			"no push", loadPushRun,
			func(o *observed) { o.clones[1].host.pushed = false },
			checkHostRestore, "clone-b: the host pushed no restore",
		},
		{
			"the kernel was not reseeded", loadPushRun,
			func(o *observed) {
				o.clones[0].host.restoreCode = 500
				o.clones[0].host.restore = hostapi.RestoreResponse{Generation: 2, KernelReseed: "not reseeded: the provider lacks CAP_SYS_ADMIN"}
			},
			checkHostRestore, "clone-a: POST /v1/restore: 500 Internal Server Error, ok=false, kernel_reseeded=false (not reseeded: the provider lacks CAP_SYS_ADMIN)",
		},
		{
			"the push did not move the generation", loadPushRun,
			func(o *observed) { o.clones[1].host.restore.Generation = 1 },
			checkHostRestore, "clone-b: POST /v1/restore: generation 1, not above the snapshot's 1",
		},
		{
			"the push's generation is not the page's", loadPushRun,
			func(o *observed) { o.clones[1].host.restore.Generation = 3 },
			checkHostRestore, "clone-b: POST /v1/restore said generation 3, the waiter saw the page bump to 2",
		},
		{
			"a push refused", loadPushRun,
			func(o *observed) {
				o.clones[0].host.restoreCode = 403
				o.clones[0].host.restoreErr = &answerError{403, "the bearer token does not match --host-token-file"}
			},
			checkHostRestore, "clone-a: POST /v1/restore: HTTP 403: the bearer token does not match",
		},
		{
			"an acpi bump in the device-less scenario", loadPushRun,
			func(o *observed) {
				o.clones[0].lines = editLines(o.clones[0].lines, "waiter", func(_ int, l console.Line) *console.Line {
					return replaceField(l, "reason", "acpi")
				})
			},
			checkBump("host", 0), `clone-a: the provider bumped to 2 for reason "acpi", want host (the host's POST /v1/restore)`,
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := tc.load(t)
			tc.edit(o)
			err := tc.check(o)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

// Without a VMGENID device, a clone is done without a fork record or a
// clock sync, but still needs the wait's result and the lines.
func TestCloneDoneWithoutDevice(t *testing.T) {
	o := loadPushRun(t)
	lines := o.clones[1].lines
	if len(forkRecords(lines)) != 0 {
		t.Fatalf("the host-push clone has fork records")
	}
	noSyncs := slices.DeleteFunc(slices.Clone(lines), func(l console.Line) bool { return strings.Contains(l.Text, console.SyncPrefix) })
	if !cloneDone(o, lines) || !cloneDone(o, noSyncs) {
		t.Error("a complete clone is not done")
	}
	o.vmgenid = true
	if cloneDone(o, lines) {
		t.Error("done without a fork record when a device was there")
	}
	o.vmgenid = false
	if cloneDone(o, slices.DeleteFunc(slices.Clone(lines), func(l console.Line) bool { return strings.HasPrefix(l.Text, "wait ") })) {
		t.Error("done without the wait's result")
	}
}

func TestPushSummary(t *testing.T) {
	var b bytes.Buffer
	printPushSummary(&b, "6.1.0-57-amd64", loadPushRun(t))
	out := b.String()
	for _, want := range []string{
		"summary, guest kernel 6.1.0-57-amd64, scenario host-push (no VMGENID device: backend manual, detects restores: false)",
		"generation: source 1 at the snapshot; clone-a 1 -> 2 (reason host); clone-b 1 -> 2 (reason host)",
		"GET /v1/status on the source before the snapshot: generation 1; GET /v1/wait?after=1&timeout=30s after cont: clone-a on 127.0.0.1:37003 200 OK adapted=true at generation 2 (waited 0.223s in the guest)",
		"POST /v1/restore, 32 bytes of the host's entropy, its own for each clone: clone-a 200 OK ok=true generation 2 kernel_reseeded=true (forced by the provider (RNDRESEEDCRNG)",
		"POST /v1/restore with a wrong token, before: clone-a 403 Forbidden, clone-b 403 Forbidden",
		"cont -> POST /v1/restore answered (host)  417ms       915ms",
		"cont -> GET /v1/wait adapted (host)       771ms       1.016s",
		// clone-a: the page's bump at 6.666841300s, the first line of
		// generation 2 at 6.743168139s.
		"page bump -> 1st reseeded line (guest)    76.33ms",
		"+1   1   19a9807262b262c15cd3b9776de1f94e 1   19a9807262b262c15cd3b9776de1f94e same*",
		"* drawn with generation 1, after the resume but before the host's push",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "cannot summarize") || strings.Contains(out, "SAME") || strings.Contains(out, "DIFFER") {
		t.Errorf("summary:\n%s", out)
	}
}
