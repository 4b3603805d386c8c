# snapsafe — see README.md. Every target works on a fresh checkout.
GO       ?= go
BIN      := bin
PKGS     := ./...
# Arguments for `make run`, e.g. make run ARGS="--dir /tmp/ss --backend manual".
ARGS     ?=
FUZZTIME ?= 30s
# Where make bench writes latest.md and latest.svg: an ignored folder unless
# asked otherwise; make bench BENCH_OUT=bench/results updates the committed ones.
BENCH_OUT ?= bench/out
# The staticcheck release make lint installs when none is on the machine.
STATICCHECK_VERSION := v0.8.2

.PHONY: all build run test bench fuzz lint clean

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

run: build
	./$(BIN)/snapsafed --backend auto $(ARGS)

# Unit, integration and multi-process tests, under the race detector.
test: lint
	$(GO) test -race -count=1 -timeout 10m $(PKGS)

# The side-by-side harness: csprng against crypto/rand, math/rand/v2 and
# x/crypto/chacha20, the generation check, reseeding and the latency
# figures; writes latest.md and latest.svg into $(BENCH_OUT).
bench:
	$(GO) run ./bench/harness -out $(BENCH_OUT)

# Every fuzz target of every package in $(PKGS), found with go test -list,
# in turn, FUZZTIME each; stops at the first failure.
fuzz:
	@GO="$(GO)" FUZZTIME="$(FUZZTIME)" scripts/fuzz.sh $(PKGS)

# gofmt; go vet for linux, darwin and purego; go generate reproduces the
# committed generated files byte for byte; staticcheck (installed at
# STATICCHECK_VERSION if the machine has none).
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)
	GOOS=darwin $(GO) vet $(PKGS)
	$(GO) vet -tags purego ./csprng/...
	@GO="$(GO)" scripts/check-generate.sh
	@GO="$(GO)" scripts/staticcheck.sh $(STATICCHECK_VERSION) $(PKGS)

clean:
	rm -rf $(BIN)

# The end-to-end proof on a real hypervisor (e2e/README.md): builds the guest
# programs static, boots every /boot/vmlinuz-* that has the vmgenid driver
# built in under QEMU, clones each running guest twice and checks that snapsafe
# reseeds every clone. Needs root (Debian's kernels are mode 0600), QEMU,
# busybox-static and linux-image-amd64: e2e/install-deps.sh installs them.
# A missing one fails the target with what to install; it never skips.
.PHONY: e2e
e2e:
	$(GO) build -o $(BIN)/clonetest ./e2e/cmd/clonetest
	./$(BIN)/clonetest $(E2EFLAGS)
