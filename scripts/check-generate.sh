#!/usr/bin/env bash
# Checks that go generate reproduces the committed generated files byte for
# byte, without touching the work tree:
#
#  1. the work tree (tracked files and new ones that are not ignored) is copied
#     into a temporary folder;
#  2. in every folder of the copy that has a //go:generate directive, the files
#     marked "// Code generated ... DO NOT EDIT." are removed, so that a file
#     the generators no longer write is caught as well;
#  3. go generate ./... runs in the copy, exactly as a developer runs it (the
#     directives write relative to their own folder, so they write into the
#     copy; their command lines, which avo records in each file's header, stay
#     as committed);
#  4. every file of the copy, and every file removed in step 2, is compared
#     with cmp against the work tree: each difference is one line naming the
#     file and the fix, and the script fails.
#
# $GO names the go command (default go).
set -euo pipefail
GO=${GO:-go}
cd "$(dirname "$0")/.."

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
copy=$tmp/tree
mkdir "$copy"

if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files -z --cached --others --exclude-standard
else
  find . -path ./.git -prune -o -path ./bin -prune -o -type f -print0
fi | while IFS= read -r -d '' f; do
  [ -f "$f" ] && printf '%s\0' "$f"   # skip tracked files deleted in the work tree
done | tar --null -T - -cf - | tar -xf - -C "$copy"

# Folders with a directive that go generate ./... visits (it skips testdata
# and folders whose names start with . or _).
gendirs=$(cd "$copy" && grep -rl --include='*.go' '^//go:generate ' . |
  sed 's|^\./||' | grep -Ev '(^|/)(testdata|[._][^/]*)/' | xargs -r -n1 dirname | sort -u)

removed=()
for d in $gendirs; do
  for f in "$copy/$d"/*; do
    [ -f "$f" ] || continue
    if head -n1 "$f" | grep -q '^// Code generated .* DO NOT EDIT\.$'; then
      removed+=("${f#"$copy"/}")
      rm "$f"
    fi
  done
done

echo "go generate ./... (in a copy of the tree), cmp against the committed files"
if ! (cd "$copy" && $GO generate ./...); then
  echo "lint: go generate ./... failed (run in a copy of the tree)"
  exit 1
fi

fix() { # the go generate command that rewrites file $1
  local d
  d=$(dirname "$1")
  if printf '%s\n' $gendirs | grep -qxF "$d"; then echo "go generate ./$d"; else echo "go generate ./..."; fi
}

status=0
while IFS= read -r f; do
  if [ ! -e "$copy/$f" ]; then
    echo "lint: go generate no longer writes $f: run $(fix "$f") and commit"
    status=1
  elif [ ! -e "$f" ]; then
    echo "lint: go generate writes $f, which is not committed: run $(fix "$f") and commit"
    status=1
  elif ! diff=$(cmp "$f" "$copy/$f" 2>&1); then
    line=${diff##*line }
    echo "lint: $f differs from what go generate writes (from line $line): run $(fix "$f") and commit"
    status=1
  fi
done < <({ (cd "$copy" && find . -type f) | sed 's|^\./||'; printf '%s\n' "${removed[@]}"; } | sort -u)
exit $status
