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
# make install: where the binaries and the systemd units go. DESTDIR is
# prepended to every path (for packaging); the installed units name the
# binaries in $(BINDIR), without DESTDIR. /etc/snapsafe is not under PREFIX:
# snapsafed is to look for restore hooks in /etc/snapsafe/restore.d, and
# snapsafe-watch@LABEL runs /etc/snapsafe/watch.d/LABEL.
PREFIX         ?= /usr/local
BINDIR         ?= $(PREFIX)/bin
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
DESTDIR        ?=
INSTALL        ?= install
UNITS          := snapsafed.service snapsafe-watch@.service
# The staticcheck release make lint installs when none is on the machine.
STATICCHECK_VERSION := v0.8.2

.PHONY: all build run test bench fuzz lint clean install uninstall units test-install

all: build

build:
	$(GO) build -o $(BIN)/ ./cmd/...

run: build
	./$(BIN)/snapsafed --backend auto $(ARGS)

# Unit, integration and multi-process tests, under the race detector.
test: lint test-install
	$(GO) test -race -count=1 -timeout 10m $(PKGS)

# The side-by-side harness: csprng against crypto/rand, math/rand/v2 and
# x/crypto/chacha20, the generation check, reseeding and the latency
# figures; writes latest.md and latest.svg into $(BENCH_OUT).
# The benchmarks' state directories go on tmpfs, as /run is where snapsafed
# runs: on a disk, every bump's high-water fdatasync costs a disk write.
BENCH_TMP ?= $(if $(wildcard /dev/shm),/dev/shm,$(TMPDIR))
bench:
	TMPDIR=$(BENCH_TMP) $(GO) run ./bench/harness -out $(BENCH_OUT)

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

# The systemd units, from dist/systemd/*.in with @BINDIR@ replaced, into
# $(BIN)/systemd/ (make install installs them from there).
units:
	@mkdir -p $(BIN)/systemd
	@for u in $(UNITS); do \
	  sed 's|@BINDIR@|$(BINDIR)|g' dist/systemd/$$u.in > $(BIN)/systemd/$$u.tmp && \
	  mv $(BIN)/systemd/$$u.tmp $(BIN)/systemd/$$u || exit 1; \
	done

# The binaries make install installs, rebuilt only when a Go source is newer
# (go build rewrites them every time), so that `make && sudo make install`
# needs no go command on root's PATH.
GO_SOURCES = $(shell find . -name .git -prune -o -name $(BIN) -prune -o \( -name '*.go' -o -name '*.s' \) -print) go.mod go.sum
$(BIN)/snapsafed $(BIN)/snapsafectl: $(GO_SOURCES)
	$(GO) build -o $@ ./cmd/$(@F)
	@touch $@

# Installs snapsafed and snapsafectl into $(DESTDIR)$(BINDIR), the units
# into $(DESTDIR)$(SYSTEMDUNITDIR) and the (empty) hook directories
# /etc/snapsafe/restore.d and /etc/snapsafe/watch.d. Then, as root:
#   systemctl daemon-reload && systemctl enable --now snapsafed
install: $(BIN)/snapsafed $(BIN)/snapsafectl units
	$(INSTALL) -D -m 0755 $(BIN)/snapsafed $(DESTDIR)$(BINDIR)/snapsafed
	$(INSTALL) -D -m 0755 $(BIN)/snapsafectl $(DESTDIR)$(BINDIR)/snapsafectl
	$(INSTALL) -D -m 0644 $(BIN)/systemd/snapsafed.service $(DESTDIR)$(SYSTEMDUNITDIR)/snapsafed.service
	$(INSTALL) -D -m 0644 $(BIN)/systemd/snapsafe-watch@.service $(DESTDIR)$(SYSTEMDUNITDIR)/snapsafe-watch@.service
	$(INSTALL) -d -m 0755 $(DESTDIR)/etc/snapsafe
	$(INSTALL) -d -m 0755 $(DESTDIR)/etc/snapsafe/restore.d $(DESTDIR)/etc/snapsafe/watch.d

# Removes what make install installed; the /etc/snapsafe directories go
# only if they are empty. Stop and disable the units first.
uninstall:
	rm -f $(DESTDIR)$(BINDIR)/snapsafed $(DESTDIR)$(BINDIR)/snapsafectl
	rm -f $(addprefix $(DESTDIR)$(SYSTEMDUNITDIR)/,$(UNITS))
	@for d in restore.d watch.d ""; do \
	  rmdir $(DESTDIR)/etc/snapsafe/$$d 2>/dev/null || \
	    { [ ! -d $(DESTDIR)/etc/snapsafe/$$d ] || echo "kept $(DESTDIR)/etc/snapsafe/$$d: not empty"; }; \
	done

# make install and make uninstall into temporary DESTDIRs: modes, PREFIX and
# SYSTEMDUNITDIR, systemd-analyze verify on the installed units, and the
# provider's sandbox rated below 5.0 by systemd-analyze security (both
# skipped, saying so, without systemd-analyze). About a second.
test-install:
	@MAKE="$(MAKE)" scripts/test-install.sh

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
