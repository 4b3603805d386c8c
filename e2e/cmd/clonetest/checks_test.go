package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/snapsafe/snapsafe/e2e/console"
)

// loadRun builds the observations of a real run (testdata: Debian 6.1 guest
// on QEMU 7.2 TCG) the way the driver does.
func loadRun(t *testing.T) *observed {
	t.Helper()
	read := func(name string) []console.Line {
		data, err := os.ReadFile(filepath.Join("testdata", name+".console"))
		if err != nil {
			t.Fatal(err)
		}
		return console.Parse(data)
	}
	o := &observed{sourceGenID: "90fef689-bb07-48d6-9fc8-c2982a1514ef", sourceLines: read("source")}
	recs, err := clientRecords(o.sourceLines, -1)
	if err != nil {
		t.Fatal(err)
	}
	o.sourceLast = recs[len(recs)-1]
	o.clones = []clone{
		{name: "clone-a", genID: "178a8322-698c-4bbd-b7f6-e91e7bfa647b", lines: read("clone-a")},
		{name: "clone-b", genID: "6410a334-9a8d-4593-9dbb-dbaa19518802", lines: read("clone-b")},
	}
	return o
}

func TestChecksPassOnRealRun(t *testing.T) {
	o := loadRun(t)
	for _, c := range checks {
		if err := c.fn(o); err != nil {
			t.Errorf("%s: %v", c.name, err)
		}
	}
}

// editLines returns a copy of the clone's lines with f applied to each
// client line (a nil result drops the line).
func editLines(lines []console.Line, f func(i int, l console.Line) *console.Line) []console.Line {
	var out []console.Line
	i := 0
	for _, l := range lines {
		if l.Prog != "client" {
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
				o.clones[1].lines = editLines(o.clones[1].lines, func(i int, l console.Line) *console.Line {
					if i == 7 {
						l.Text = l.Text[:len(l.Text)-32] + strings.Repeat("ab", 16)
					}
					return &l
				})
			},
			checkControlIdentical, "PROBLEM NOT REPRODUCED",
		},
		{
			"a clone printed too little",
			func(o *observed) {
				o.clones[0].lines = editLines(o.clones[0].lines, func(i int, l console.Line) *console.Line {
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
					o.clones[i].lines = editLines(o.clones[i].lines, func(j int, l console.Line) *console.Line {
						k := strings.Index(l.Text, "control=")
						if j == 0 {
							first = l.Text[k:]
						}
						if j == 3 {
							l.Text = l.Text[:k] + first
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
			"a garbled client line",
			func(o *observed) {
				o.clones[0].lines = editLines(o.clones[0].lines, func(i int, l console.Line) *console.Line {
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
				o.clones[0].lines = slices.Clone(o.clones[0].lines)
				for i, l := range o.clones[0].lines {
					if strings.HasSuffix(l.Text, forkMessage) {
						o.clones[0].lines[i].Text = "13" + l.Text[1:] // facility 1, level 5
					}
				}
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

func TestPlaceFork(t *testing.T) {
	o := loadRun(t)
	p, err := placeFork(o, o.clones[0])
	if err != nil {
		t.Fatal(err)
	}
	if p.record.Seq != 365 || p.record.Time != 3285258*time.Microsecond {
		t.Errorf("record = %+v", p.record)
	}
	// Between the source's last line and the clone's first, as the clocks
	// of both stood still in between.
	if len(p.before) != 2 || p.before[1] != o.sourceLast {
		t.Errorf("before = %+v, want to end with the snapshot point %+v", p.before, o.sourceLast)
	}
	first, err := clientRecords(o.clones[0].lines, -1)
	if err != nil {
		t.Fatal(err)
	}
	if len(p.after) != 2 || p.after[0] != first[0] {
		t.Errorf("after = %+v, want to start with the clone's first line %+v", p.after, first[0])
	}
	if !(o.sourceLast.T < p.t && p.t < first[0].T) {
		t.Errorf("fork at T=%v, not between %v and %v", p.t, o.sourceLast.T, first[0].T)
	}

	o.sourceLines = nil // the clone alone has one sync
	if _, err := placeFork(o, o.clones[0]); err == nil || !strings.Contains(err.Error(), "too few clock syncs") {
		t.Errorf("err = %v, want too few clock syncs", err)
	}
}
