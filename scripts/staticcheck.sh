#!/usr/bin/env bash
# Runs staticcheck (honnef.co/go/tools/cmd/staticcheck) on the packages given.
# The staticcheck on PATH is used if there is one, else the one in the Go bin
# folder ($(go env GOBIN), or the first GOPATH entry's bin); when neither has
# one, the pinned VERSION is installed there with go install first.
#
#   scripts/staticcheck.sh VERSION PACKAGES...     (make lint passes ./...)
#
# $GO names the go command (default go).
set -euo pipefail
GO=${GO:-go}
[ $# -ge 2 ] || { echo "usage: $0 VERSION PACKAGES..." >&2; exit 2; }
version=$1
shift

gobin=$($GO env GOBIN)
[ -n "$gobin" ] || gobin="$($GO env GOPATH | cut -d: -f1)/bin"

if sc=$(command -v staticcheck); then
  :
elif [ -x "$gobin/staticcheck" ]; then
  sc=$gobin/staticcheck
else
  echo "lint: installing honnef.co/go/tools/cmd/staticcheck@$version into $gobin"
  $GO install "honnef.co/go/tools/cmd/staticcheck@$version"
  sc=$gobin/staticcheck
fi

# A staticcheck found on the machine may be another release than the pinned
# one and report other findings: say so, but use it. (-version prints e.g.
# "staticcheck 2026.2.2 (0.8.2)" for v0.8.2.)
have=$("$sc" -version 2>/dev/null || true)
case $have in
  *"(${version#v})"*) ;;
  *) echo "lint: note: $sc is ${have:-of unknown version}; the Makefile pins $version" >&2 ;;
esac

echo "staticcheck $*"
exec "$sc" "$@"
