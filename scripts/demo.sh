#!/usr/bin/env bash
# The main job on real data: commit /usr/share/doc, change it, commit again, inspect;
# question its history (log -- PATH, diff --stat, REV@{DATE}); re-commit a farm,
# publish and pull over HTTP, deploy into a sysroot.
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
time first=$($SAPWOOD commit -b docs/main -s "Debian docs" --add-metadata-string version=1 \
    --timestamp 2026-11-01T09:00:00 "$TREE")
echo "first commit: $first"

step "change the tree: edit one file, add one, remove one; commit again"
echo "edited by the sapwood demo" >> "$TREE/bash/RBASH"
echo "a new file" > "$TREE/NEW-FILE"
victim=$(find "$TREE" -type f -name 'copyright' | sort | sed -n 1p)
rm "$victim"
time second=$($SAPWOOD commit -b docs/main -s "Edited docs" --add-metadata-string version=2 \
    --timestamp 2026-11-10T09:00:00 "$TREE")

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

step "question the history: which commits changed a path, what changed where, what a ref held on a date"
$SAPWOOD log docs/main -- /bash/RBASH | grep -E '^(commit|Date)'
$SAPWOOD log -p docs/main -- /bash/RBASH > "$WORK/log-p.txt"  # whole: grep -m1 would end it by SIGPIPE (pipefail)
grep -m1 -A4 '^@@' "$WORK/log-p.txt"
$SAPWOOD diff "$first" "$second" -- /bash
$SAPWOOD show --stat docs/main
echo "--- docs/main@{2026-11-05} is the first commit (the ref's newest on that date):"
$SAPWOOD rev-parse 'docs/main@{2026-11-05}'
$SAPWOOD cat 'docs/main@{2026-11-05}' /bash/RBASH | tail -3

step "the repository's settings, validated as opening it validates them"
$SAPWOOD config get core.fsync
$SAPWOOD config set core.min-free-space-percent 5
$SAPWOOD config set core.fsync maybe || echo "(refused, nothing written)"
$SAPWOOD config list

step "refs and the repository's size"
$SAPWOOD refs --json
du -sh "$SAPWOOD_REPO"

step "check the newest commit out as a hardlink farm owned by you (-U), and compare"
$SAPWOOD checkout -U docs/main "$WORK/checkout"
stat -c '%h links  %A  %n' "$WORK/checkout/bash/RBASH"
$SAPWOOD diff docs/main "$WORK/checkout" && echo "checkout equals its commit"

step "edit the farm as an image builder would and commit it again: farm files are their objects, not read"
sed -i '1i # edited in the farm' "$WORK/checkout/bash/inputrc.arrows"   # a new inode, as editors make
echo "added in the farm" > "$WORK/checkout/FARM-FILE"
$SAPWOOD -v commit -b docs/main -s "Edited in a farm" "$WORK/checkout" 2>&1 >/dev/null | grep scanned
echo "--- what the re-commit changed (exactly the two edits):"
$SAPWOOD diff docs/main^ docs/main

step "mount the whole repository read-only (no checkout): refs/, commits/, history/"
mkdir -p "$WORK/mnt"
$SAPWOOD mount "$WORK/mnt"
ls "$WORK/mnt" "$WORK/mnt/refs/docs" "$WORK/mnt/history/docs/main"
echo "--- the old RBASH, from history/:"
tail -2 "$WORK/mnt/history/docs/main/$(ls "$WORK/mnt/history/docs/main" | sed -n 1p)/bash/RBASH"
echo "--- and by date (history/REF/by-date/DATE is looked up, not listed):"
tail -3 "$WORK/mnt/history/docs/main/by-date/2026-11-05/bash/RBASH"
stat -c '%A %U %s %y %n' "$WORK/mnt/refs/docs/main/bash/RBASH"
getfattr -d "$WORK/mnt/refs/docs/main" 2>/dev/null | sed -n '2,6p' || true
$SAPWOOD umount "$WORK/mnt"

step "fsck re-hashes every object the refs need"
$SAPWOOD fsck

step "prune: keep only the newest commit of each ref"
$SAPWOOD prune --refs-only --depth 0 --dry-run
$SAPWOOD prune --refs-only --depth 0
$SAPWOOD log docs/main | sed -n '1,3p'

step "publish: an archive repository (zstd objects, static files), signed, with a static delta"
PUBLIC="$WORK/public"
$SAPWOOD --repo "$PUBLIC" init --mode archive
$SAPWOOD --repo "$PUBLIC" pull-local "$SAPWOOD_REPO" docs/main
$SAPWOOD keygen --keys-file "$WORK/release.key" > "$WORK/release.pub"
$SAPWOOD --repo "$PUBLIC" sign --keys-file "$WORK/release.key" docs/main
$SAPWOOD --repo "$PUBLIC" static-delta generate --to docs/main >/dev/null
$SAPWOOD --repo "$PUBLIC" summary -u --keys-file "$WORK/release.key"
$SAPWOOD --repo "$PUBLIC" summary

step "serve it with a plain static web server on 127.0.0.1; pull it, verifying the signature"
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 --directory "$PUBLIC" "$port" 2>"$WORK/http.log" >/dev/null &
server=$!
trap 'kill $server 2>/dev/null || true' EXIT
for _ in $(seq 50); do python3 -c "import socket; socket.create_connection(('127.0.0.1', $port))" 2>/dev/null && break; sleep 0.1; done
CLIENT="$WORK/client"
$SAPWOOD --repo "$CLIENT" init --mode bare-user
$SAPWOOD --repo "$CLIENT" remote add --sign-verify --trusted-key "$(cat "$WORK/release.pub")" origin "http://127.0.0.1:$port/"
time $SAPWOOD --repo "$CLIENT" pull origin docs/main
echo "--- the requests the server saw (a static delta instead of one request per object):"
grep -o '"GET [^ ]*' "$WORK/http.log" | cut -c2- | sed 's/[0-9a-f]\{64\}/<id>/g'
$SAPWOOD --repo "$CLIENT" show origin:docs/main | grep -E '^(commit|Signed-by)'
$SAPWOOD --repo "$CLIENT" fsck
kill $server

step "deploy: a small OS tree into a sysroot, /etc edited by the administrator, an update merged"
SYSROOT="$WORK/sysroot"
OS="$WORK/os"
mkdir -p "$OS/usr/etc" "$OS/usr/bin" "$OS/boot"
cp /bin/true "$OS/usr/bin/"
echo 'PRETTY_NAME="sapwood demo OS"' > "$OS/usr/etc/os-release"
echo "log=info" > "$OS/usr/etc/demo.conf"
echo "welcome to v1" > "$OS/usr/etc/motd"
echo "v1" > "$OS/usr/etc/version"
printf 'stand-in kernel' > "$OS/boot/vmlinuz-6.1.0-demo"  # make test-boot boots a real one
printf 'stand-in initramfs' > "$OS/boot/initrd.img-6.1.0-demo"
mkdir -p "$OS/home" "$OS/root"
echo "# root's profile" > "$OS/root/.profile"
$SAPWOOD admin prepare-tree "$OS"   # /home, /root, ... into /var: users' data outlives deployments
$SAPWOOD admin init-fs "$SYSROOT"
$SAPWOOD admin --sysroot "$SYSROOT" os-init demo
$SAPWOOD --repo "$SYSROOT/sapwood/repo" commit -b demo/os -s v1 "$OS" >/dev/null
$SAPWOOD admin --sysroot "$SYSROOT" deploy --os demo --karg root=LABEL=demo --karg rw demo/os
deployment=$(ls -d "$SYSROOT"/sapwood/deploy/demo/deploy/*.0)
echo "log=debug" > "$deployment/etc/demo.conf"   # modified by the administrator
echo "mine" > "$deployment/etc/local.conf"       # added
rm "$deployment/etc/motd"                        # deleted
$SAPWOOD admin --sysroot "$SYSROOT" config-diff
echo "welcome to v2" > "$OS/usr/etc/motd"
echo "v2" > "$OS/usr/etc/version"
$SAPWOOD --repo "$SYSROOT/sapwood/repo" commit -b demo/os -s v2 "$OS" >/dev/null
$SAPWOOD admin --sysroot "$SYSROOT" deploy demo/os
$SAPWOOD admin --sysroot "$SYSROOT" status
default_entry=$(ls "$SYSROOT"/boot/loader/entries/*.conf | sort -V | tail -1)  # the highest version
new=$(sed -n 's/^options .*sapwood=//p' "$default_entry")
echo "--- the new deployment's /etc: local edits kept, the untouched default updated, motd still deleted:"
(cd "$SYSROOT$new/etc" && grep . demo.conf local.conf version; ls motd 2>/dev/null || echo "no motd")
echo "--- /root is the OS's shared /var/roothome, seeded once: $(readlink "$SYSROOT$new/root") ->" \
  "$(cat "$SYSROOT/sapwood/deploy/demo/var/roothome/.profile")"
echo "--- boot entries (boot/loader -> $(readlink "$SYSROOT/boot/loader")):"
grep -h -E '^(title|version|options)' "$SYSROOT"/boot/loader/entries/*.conf
$SAPWOOD admin --sysroot "$SYSROOT" rollback

step "damage one object on disk, as a bad sector or a hostile user would"
id=$($SAPWOOD ls --json docs/main /bash/RBASH | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["id"])')
object="$SAPWOOD_REPO/objects/${id:0:2}/${id:2}.file"
chmod u+w "$object"
printf 'X' | dd of="$object" bs=1 seek=0 conv=notrunc status=none
echo "--- cat verifies before it prints:"
$SAPWOOD cat docs/main /bash/RBASH >/dev/null || echo "(cat printed nothing)"
echo "--- the hardlinked checkout shares the object's inode; diff re-hashes it:"
$SAPWOOD diff docs/main "$WORK/checkout" || true
echo "--- fsck names the object and the commit that needs it:"
$SAPWOOD fsck || echo "(fsck failed, as it must)"
