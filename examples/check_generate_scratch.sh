#!/bin/sh
# check_generate_scratch.sh <generate> <work folder>: generate's scratch checkpoint must go to a folder it creates
# itself, never to a name planted in advance. The old name was predictable, $TMPDIR/ngemb_generate_<pid>; a shell
# that execs generate hands it its own pid ($$), so the planted names are exactly the ones the old code would use:
#   1. a folder holding a sentinel file: it must survive, content and all (the old code deleted it at exit);
#   2. a symbolic link to another folder: nothing may be written through it (the old code wrote the checkpoint there).
# Either way $TMPDIR must hold nothing else afterwards: generate removes what it created.
set -eu
generate=$1
work=$2
rm -rf "$work"
mkdir -p "$work/tmp" "$work/elsewhere"
TMPDIR="$work/tmp"
export TMPDIR
fail() {
  echo "check_generate_scratch: $*" >&2
  exit 1
}

# 1. A pre-existing folder under the predictable name.
sh -c 'mkdir "$TMPDIR/ngemb_generate_$$" && echo keep > "$TMPDIR/ngemb_generate_$$/sentinel" &&
       exec "$0" --max-new-tokens 1' "$generate" > "$work/out1.txt" || fail "generate failed (planted folder)"
planted=$(ls "$TMPDIR")
case $planted in
  ngemb_generate_[0-9]*) ;;
  *) fail "\$TMPDIR should hold only the planted folder afterwards, holds: $planted" ;;
esac
[ "$(cat "$TMPDIR/$planted/sentinel" 2>/dev/null)" = keep ] || fail "the planted folder's sentinel file was removed"
[ "$(ls "$TMPDIR/$planted")" = sentinel ] || fail "files were written into the planted folder: $(ls "$TMPDIR/$planted")"
rm -rf "${TMPDIR:?}/$planted"

# 2. A symbolic link under the predictable name.
sh -c 'ln -s "$1" "$TMPDIR/ngemb_generate_$$" && exec "$0" --max-new-tokens 1' "$generate" "$work/elsewhere" \
  > "$work/out2.txt" || fail "generate failed (planted symbolic link)"
[ -z "$(ls -A "$work/elsewhere")" ] || fail "files were written through the planted link: $(ls -A "$work/elsewhere")"
planted=$(ls "$TMPDIR")
case $planted in
  ngemb_generate_[0-9]*) [ -L "$TMPDIR/$planted" ] || fail "the planted link was replaced" ;;
  *) fail "\$TMPDIR should hold only the planted link afterwards, holds: $planted" ;;
esac
grep -q "saved it to $TMPDIR/ngemb_generate_" "$work/out2.txt" || fail "generate did not save under \$TMPDIR"
rm -rf "$work"
echo "check_generate_scratch: the planted folder and link were left alone"
