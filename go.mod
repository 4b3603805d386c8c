module github.com/snapsafe/snapsafe

go 1.24.0

require (
	github.com/google/uuid v1.6.0
	github.com/klauspost/cpuid/v2 v2.4.2
	golang.org/x/crypto v0.48.0
	golang.org/x/sys v0.41.0
)
