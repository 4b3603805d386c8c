package csprng_test

import (
	"crypto/tls"
	"fmt"
	"math/rand/v2"

	"github.com/google/uuid"
	"github.com/snapsafe/snapsafe/csprng"
)

// Replace math/rand/v2's generator: every value is checked against the
// generation, so clones of a VM never draw the same numbers.
func Example_mathRand() {
	r := rand.New(csprng.New()) // one goroutine; csprng.Uint64 is safe for many
	n := r.IntN(6) + 1
	fmt.Println(n >= 1 && n <= 6)
	// Output: true
}

// Use csprng for TLS's own randomness (client and server randoms, session
// tickets, nonces). Key generation in crypto/* ignores custom readers from
// Go 1.26 on and uses the kernel, which is VM-fork-safe too.
// (Compiled, not run: the TLS handshake itself is tested in
// TestTLSHandshake.)
func Example_tls() {
	cfg := &tls.Config{Rand: csprng.Reader}
	_ = cfg
}

// Make github.com/google/uuid draw from csprng, once, at start-up.
func Example_uuid() {
	uuid.SetRand(csprng.Reader)
	defer uuid.SetRand(nil)
	fmt.Println(int(uuid.New().Version()))
	fmt.Println(int(csprng.NewUUIDv7().Version()))
	// Output:
	// 4
	// 7
}

// Random IDs and tokens straight from the shared generator.
func ExampleRead() {
	token := make([]byte, 16)
	csprng.Read(token) // always fills token; never fails
	fmt.Println(len(fmt.Sprintf("%x", token)))
	// Output: 32
}

// Diagnostics: where the generation comes from ("provider", "follower" or
// "kernel"), and the current generation. (Compiled, not run: the answer
// depends on the machine.)
func ExampleCurrentMode() {
	fmt.Println(csprng.CurrentMode(), csprng.Generation())
}
