// Package eventually is the one polling helper of snapsafe's tests: wait
// for a condition that another goroutine or process makes true.
//
// It is for conditions that must become true. To assert that something did
// NOT happen, cause an event that must be seen after it (a fence) and check
// the count moved by exactly one; never sleep and look.
package eventually

import (
	"testing"
	"time"
)

// Timeout bounds every wait: long enough for a loaded CI machine, short
// enough that a real hang fails the test rather than the whole run.
const Timeout = 10 * time.Second

// True polls cond until it holds, failing the test with what after Timeout.
func True(t testing.TB, what string, cond func() bool) {
	t.Helper()
	delay := 100 * time.Microsecond
	for end := time.Now().Add(Timeout); !cond(); time.Sleep(delay) {
		if time.Now().After(end) {
			t.Fatalf("timed out after %v waiting for %s", Timeout, what)
		}
		delay = min(2*delay, 5*time.Millisecond)
	}
}
