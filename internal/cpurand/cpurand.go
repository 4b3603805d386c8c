// Package cpurand reads the CPU's own random number generator (RDSEED,
// else RDRAND, on amd64), as defence in depth: snapsafe mixes it into
// reseeds so that a clone whose kernel has not yet reseeded (a VMClock or
// host-pushed signal can precede the kernel's own reseed) still gets
// fresh input from outside the cloned memory.
//
// It is never the only source of a key: output is mixed with the kernel's
// getrandom, so a CPU RNG that is broken or backdoored adds nothing but
// takes nothing away either.
package cpurand
