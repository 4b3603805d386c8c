# snapsafe — see README.md. Every target works on a fresh checkout.
GO       ?= go
BIN      := bin
PKGS     := ./...
# Arguments for `make run`, e.g. make run ARGS="--dir /tmp/ss --backend manual".
ARGS     ?=
FUZZTIME ?= 30s

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
# figures; writes bench/results/latest.md and latest.svg.
bench:
	$(GO) run ./bench/harness -out bench/results

fuzz:
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./runtime

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed on:"; echo "$$out"; exit 1; fi
	$(GO) vet $(PKGS)

clean:
	rm -rf $(BIN)
