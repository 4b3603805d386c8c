#!/usr/bin/env bash
# Runs every fuzz target of the packages given (default ./...), one after
# another, FUZZTIME each (default 30s), and stops at the first failure. The
# targets are found with go test -list '^Fuzz', so none is named here.
#
# $GO names the go command (default go).
set -euo pipefail
GO=${GO:-go}
FUZZTIME=${FUZZTIME:-30s}
[ $# -gt 0 ] || set -- ./...

# go test -list prints each package's matching names, then "ok  <package> ...".
list=$($GO test -list '^Fuzz' "$@")
targets=$(awk '
  /^Fuzz[A-Za-z0-9_]*$/ { names[n++] = $1; next }
  /^ok[ \t]/            { for (i = 0; i < n; i++) print $2, names[i]; n = 0 }
' <<<"$list")

if [ -z "$targets" ]; then
  echo "make fuzz: no fuzz targets found in $*"
  exit 1
fi

count=$(wc -l <<<"$targets")
echo "make fuzz: $count targets, $FUZZTIME each:"
echo "$targets" | sed 's/^/  /'
while read -r pkg name; do
  echo "== $name ($pkg)"
  $GO test -run '^$' -fuzz "^$name\$" -fuzztime "$FUZZTIME" "$pkg"
done <<<"$targets"
echo "make fuzz: all $count targets passed"
