#!/usr/bin/env bash
# The main job on real data: commit /usr/share/doc, change it, commit again, inspect.
set -euo pipefail
cd "$(dirname "$0")/.."
SAPWOOD=.venv/bin/sapwood
WORK=${SAPWOOD_DEMO_DIR:-build/demo}
rm -rf "$WORK"
mkdir -p "$WORK"
export SAPWOOD_REPO="$WORK/repo"
TREE="$WORK/tree"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "init a bare-user repository (no root needed) at $SAPWOOD_REPO"
$SAPWOOD init --mode bare-user

step "copy /usr/share/doc to $TREE and commit it"
cp -a /usr/share/doc "$TREE"
time first=$($SAPWOOD commit -b docs/main -s "Debian docs" --add-metadata-string version=1 "$TREE")
echo "first commit: $first"

step "change the tree: edit one file, add one, remove one; commit again"
echo "edited by the sapwood demo" >> "$TREE/bash/RBASH"
echo "a new file" > "$TREE/NEW-FILE"
victim=$(find "$TREE" -type f -name 'copyright' | sort | sed -n 1p)
rm "$victim"
time second=$($SAPWOOD commit -b docs/main -s "Edited docs" --add-metadata-string version=2 "$TREE")

step "commit the unchanged tree again (the stat cache reads nothing)"
time $SAPWOOD commit -b docs/main -s "Unchanged" --skip-if-unchanged "$TREE" >/dev/null

step "sapwood log docs/main"
$SAPWOOD log docs/main

step "sapwood diff ${first:0:12} ${second:0:12}"
$SAPWOOD diff "${first:0:12}" "$second"

step "sapwood ls docs/main /bash"
$SAPWOOD ls docs/main /bash | sed -n '1,12p'

step "sapwood cat docs/main^ /bash/RBASH | tail -3   (the old version)"
$SAPWOOD cat docs/main^ /bash/RBASH | tail -3
step "sapwood cat docs/main /bash/RBASH | tail -3    (the new version)"
$SAPWOOD cat docs/main /bash/RBASH | tail -3

step "refs and the repository's size"
$SAPWOOD refs --json
du -sh "$SAPWOOD_REPO"

step "check the newest commit out as a hardlink farm owned by you (-U), and compare"
$SAPWOOD checkout -U docs/main "$WORK/checkout"
stat -c '%h links  %A  %n' "$WORK/checkout/bash/RBASH"
$SAPWOOD diff docs/main "$WORK/checkout" && echo "checkout equals its commit"

step "mount the whole repository read-only (no checkout): refs/, commits/, history/"
mkdir -p "$WORK/mnt"
$SAPWOOD mount "$WORK/mnt"
ls "$WORK/mnt" "$WORK/mnt/refs/docs" "$WORK/mnt/history/docs/main"
echo "--- the old RBASH, from history/:"
tail -2 "$WORK/mnt/history/docs/main/$(ls "$WORK/mnt/history/docs/main" | sed -n 1p)/bash/RBASH"
stat -c '%A %U %s %y %n' "$WORK/mnt/refs/docs/main/bash/RBASH"
getfattr -d "$WORK/mnt/refs/docs/main" 2>/dev/null | sed -n '2,6p' || true
$SAPWOOD umount "$WORK/mnt"

step "fsck re-hashes every object the refs need"
$SAPWOOD fsck

step "prune: keep only the newest commit of each ref"
$SAPWOOD prune --refs-only --depth 0 --dry-run
$SAPWOOD prune --refs-only --depth 0
$SAPWOOD log docs/main | sed -n '1,3p'

step "damage one object on disk, as a bad sector or a hostile user would"
id=$($SAPWOOD ls --json docs/main /bash/RBASH | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["id"])')
object="$SAPWOOD_REPO/objects/${id:0:2}/${id:2}.file"
chmod u+w "$object"
printf 'X' | dd of="$object" bs=1 seek=0 conv=notrunc status=none
chmod u-w "$object"
echo "--- cat verifies before it prints:"
$SAPWOOD cat docs/main /bash/RBASH >/dev/null || echo "(cat printed nothing)"
echo "--- the hardlinked checkout shares the object's inode; diff re-hashes it:"
$SAPWOOD diff docs/main "$WORK/checkout" || true
echo "--- fsck names the object and the commit that needs it:"
$SAPWOOD fsck || echo "(fsck failed, as it must)"
