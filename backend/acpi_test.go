package backend

import (
	"testing"
	"time"
)

func TestCoalescer(t *testing.T) {
	ms := func(n int) time.Time { return time.Unix(1000, 0).Add(time.Duration(n) * time.Millisecond) }
	type ev struct {
		signal string
		lost   bool
		at     int // milliseconds
		want   bool
	}
	for _, tc := range []struct {
		name string
		evs  []ev
	}{
		{"one signal: every event is a restore", []ev{
			{"uevent", false, 0, true}, {"uevent", false, 1, true}, {"uevent", false, 2, true},
		}},
		{"both signals of one restore, either order", []ev{
			{"kmsg", false, 0, true}, {"uevent", false, 0, false},
			{"uevent", false, 5000, true}, {"kmsg", false, 5000, false},
		}},
		{"two restores in quick succession, signals interleaved", []ev{
			{"kmsg", false, 0, true}, {"kmsg", false, 1, true}, {"uevent", false, 2, false}, {"uevent", false, 3, false},
		}},
		{"a signal that missed one restore does not hold back the next", []ev{
			{"kmsg", false, 0, true}, {"uevent", false, 0, false}, // restore 1
			{"kmsg", false, 3000, true},                                 // restore 2: its uevent was lost
			{"uevent", false, 6000, true}, {"kmsg", false, 6000, false}, // restore 3: uevent first, beyond the window
		}},
		{"a late second signal is a new restore", []ev{
			{"kmsg", false, 0, true}, {"uevent", false, 1500, true},
		}},
		{"lost events always bump and realign", []ev{
			{"uevent", true, 0, true}, {"uevent", false, 10, true}, {"kmsg", false, 10, false},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newCoalescer(time.Second)
			for i, e := range tc.evs {
				if got := c.take(e.signal, e.lost, ms(e.at)); got != e.want {
					t.Fatalf("event %d (%s at %dms): restore = %v, want %v", i, e.signal, e.at, got, e.want)
				}
			}
		})
	}
}
