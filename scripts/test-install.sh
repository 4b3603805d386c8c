#!/usr/bin/env bash
# Checks make install and make uninstall (make test-install):
#   - make install DESTDIR=<temp>: the binaries (0755), the units (0644) and
#     the hook directories (0755) are where PREFIX says, and the units name
#     the binaries by their installed path (without DESTDIR);
#   - PREFIX and SYSTEMDUNITDIR are honoured;
#   - systemd-analyze verify accepts the units, with no warning at all (it
#     exits 0 on unknown keys and bad values, so any output fails the test);
#   - systemd-analyze security --offline=yes rates snapsafed.service below
#     $MAX_EXPOSURE (default 5.0);
#   - make uninstall leaves no file behind.
# Without systemd-analyze the two systemd checks are skipped, saying so.
#
# $MAKE names the make command (default make). Nothing outside temporary
# directories is touched.
set -euo pipefail
MAKE=${MAKE:-make}
MAX_EXPOSURE=${MAX_EXPOSURE:-5.0}
cd "$(dirname "$0")/.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
umask 022
fail() { echo "test-install: FAIL: $*" >&2; exit 1; }

# mode PATH: the permission bits of PATH, in octal.
mode() { stat -c %a "$1"; }

# expect_mode MODE PATH [file|dir]
expect_mode() {
  local want=$1 path=$2 kind=${3:-file}
  if [ "$kind" = dir ]; then
    [ -d "$path" ] || fail "$path: not installed (want a directory)"
  else
    [ -f "$path" ] || fail "$path: not installed (want a file)"
  fi
  local got
  got=$(mode "$path")
  [ "$got" = "$want" ] || fail "$path: mode $got, want $want"
}

# check_tree DESTDIR BINDIR UNITDIR: everything make install puts there.
check_tree() {
  local d=$1 bindir=$2 unitdir=$3 u
  expect_mode 755 "$d$bindir/snapsafed"
  expect_mode 755 "$d$bindir/snapsafectl"
  "$d$bindir/snapsafed" -h >/dev/null 2>&1 || fail "$d$bindir/snapsafed -h failed"
  for u in snapsafed.service snapsafe-watch@.service; do
    expect_mode 644 "$d$unitdir/$u"
    if grep -q '@[A-Z]*@' "$d$unitdir/$u"; then
      fail "$d$unitdir/$u: placeholder left: $(grep -m1 '@[A-Z]*@' "$d$unitdir/$u")"
    fi
  done
  grep -qx "ExecStart=$bindir/snapsafed --backend auto" "$d$unitdir/snapsafed.service" ||
    fail "$d$unitdir/snapsafed.service: ExecStart does not name $bindir/snapsafed: $(grep ExecStart= "$d$unitdir/snapsafed.service")"
  grep -q "^ExecStart=$bindir/snapsafectl watch " "$d$unitdir/snapsafe-watch@.service" ||
    fail "$d$unitdir/snapsafe-watch@.service: ExecStart does not name $bindir/snapsafectl"
  expect_mode 755 "$d/etc/snapsafe" dir
  expect_mode 755 "$d/etc/snapsafe/restore.d" dir
  expect_mode 755 "$d/etc/snapsafe/watch.d" dir
}

echo "test-install: make install DESTDIR=$tmp/default"
$MAKE --no-print-directory install DESTDIR="$tmp/default" >"$tmp/install.log" 2>&1 ||
  { cat "$tmp/install.log" >&2; fail "make install failed"; }
check_tree "$tmp/default" /usr/local/bin /usr/local/lib/systemd/system

echo "test-install: make install PREFIX=/opt/snapsafe SYSTEMDUNITDIR=/etc/systemd/system"
$MAKE --no-print-directory install DESTDIR="$tmp/prefix" PREFIX=/opt/snapsafe \
  SYSTEMDUNITDIR=/etc/systemd/system >"$tmp/install.log" 2>&1 ||
  { cat "$tmp/install.log" >&2; fail "make install PREFIX=/opt/snapsafe failed"; }
check_tree "$tmp/prefix" /opt/snapsafe/bin /etc/systemd/system
[ ! -e "$tmp/prefix/opt/snapsafe/lib/systemd" ] || fail "SYSTEMDUNITDIR ignored: units also in PREFIX/lib/systemd"

if command -v systemd-analyze >/dev/null; then
  # verify checks that ExecStart names an executable: check copies of the
  # installed units that name the binaries under DESTDIR, with a template
  # instance, on the system's own unit search path (for sysinit.target and
  # the rest).
  units="$tmp/default/usr/local/lib/systemd/system"
  mkdir "$tmp/verify"
  for u in snapsafed.service snapsafe-watch@.service; do
    sed "s|^ExecStart=/usr/local/bin/|ExecStart=$tmp/default/usr/local/bin/|" "$units/$u" >"$tmp/verify/$u"
  done
  echo "test-install: systemd-analyze verify snapsafed.service snapsafe-watch@test.service"
  if ! out=$(cd / && SYSTEMD_UNIT_PATH="$tmp/verify:" systemd-analyze verify \
    snapsafed.service snapsafe-watch@test.service 2>&1) || [ -n "$out" ]; then
    echo "$out" >&2
    fail "systemd-analyze verify complained about the installed units"
  fi

  for u in snapsafed.service snapsafe-watch@test.service; do
    cp "$units/${u/@test/@}" "$tmp/$u"
    line=$(systemd-analyze security --offline=yes "$tmp/$u" 2>&1 | grep 'Overall exposure level') ||
      fail "systemd-analyze security --offline=yes $u printed no overall exposure level"
    score=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$line")
    [ -n "$score" ] || fail "cannot parse: $line"
    echo "test-install: systemd-analyze security --offline=yes $u: $score"
    if [ "$u" = snapsafed.service ] && ! awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s < m) }'; then
      systemd-analyze security --offline=yes "$tmp/$u" >&2 || true
      fail "snapsafed.service: exposure $score, want below $MAX_EXPOSURE"
    fi
  done
else
  echo "test-install: SKIP systemd-analyze verify and security: systemd-analyze is not installed"
fi

echo "test-install: make uninstall DESTDIR=$tmp/default"
$MAKE --no-print-directory uninstall DESTDIR="$tmp/default" >"$tmp/uninstall.log" 2>&1 ||
  { cat "$tmp/uninstall.log" >&2; fail "make uninstall failed"; }
left=$(find "$tmp/default" ! -type d)
[ -z "$left" ] || fail "make uninstall left files behind: $left"
[ ! -e "$tmp/default/etc/snapsafe" ] || fail "make uninstall kept the empty $tmp/default/etc/snapsafe"

# A hook an operator installed is kept, and so is its directory.
touch "$tmp/prefix/etc/snapsafe/restore.d/hook"
$MAKE --no-print-directory uninstall DESTDIR="$tmp/prefix" PREFIX=/opt/snapsafe \
  SYSTEMDUNITDIR=/etc/systemd/system >"$tmp/uninstall.log" 2>&1 ||
  { cat "$tmp/uninstall.log" >&2; fail "make uninstall PREFIX=/opt/snapsafe failed"; }
[ -f "$tmp/prefix/etc/snapsafe/restore.d/hook" ] || fail "make uninstall removed an operator's hook"
left=$(find "$tmp/prefix" ! -type d ! -path "$tmp/prefix/etc/snapsafe/restore.d/hook")
[ -z "$left" ] || fail "make uninstall PREFIX=/opt/snapsafe left files behind: $left"

echo "test-install: ok"
