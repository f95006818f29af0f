#!/bin/sh
# init= of the boot test's deployments (/usr/local/sbin/sapwood-boot-check): runs as
# PID 1 in the booted deployment, reports on the console (ttyS0) one "SAPWOOD-CHECK
# key value" line per fact the test asserts, then powers the machine off.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH

say() { echo "SAPWOOD-CHECK $*"; }

read -r cmdline </proc/cmdline
deployment=""
for arg in $cmdline; do
	case "$arg" in
	sapwood=*) deployment="${arg#sapwood=}" ;;
	esac
done
say "version $(cat /usr/share/sapwood-test/version)"
say "cmdline $deployment"
say "booted $(cat /run/sapwood-booted 2>/dev/null)"

# / is the deployment: the same directory (device and inode) as the one under /sysroot.
if [ -n "$deployment" ] && [ "$(stat -c %d:%i /)" = "$(stat -c %d:%i "/sysroot$deployment")" ]; then
	say "root-is-deployment yes"
else
	say "root-is-deployment no"
fi
if [ -d /sysroot/sapwood/repo ]; then say "sysroot yes"; else say "sysroot no"; fi

# /usr read-only: a write fails; / itself (the deployment) stays writable.
if touch /usr/sapwood-write-test 2>/dev/null; then
	rm -f /usr/sapwood-write-test
	say "usr-write succeeded"
else
	say "usr-write failed"
fi
if touch /sapwood-write-test 2>/dev/null; then
	rm -f /sapwood-write-test
	say "root-write succeeded"
else
	say "root-write failed"
fi

# /etc: the merged files, and writable.
for name in sapwood-test.conf sapwood-unchanged.conf; do
	say "etc $name $(cat "/etc/$name" 2>/dev/null || echo MISSING)"
done
if echo written >/etc/sapwood-write-test 2>/dev/null; then
	rm -f /etc/sapwood-write-test
	say "etc-write succeeded"
else
	say "etc-write failed"
fi

# /var shared: the boots seen before this one, then this one added.
seen=""
if [ -f /var/sapwood-test.log ]; then
	while read -r line; do seen="$seen $line"; done </var/sapwood-test.log
fi
say "var-seen${seen:- none}"
if echo "$(cat /usr/share/sapwood-test/version)" >>/var/sapwood-test.log; then
	say "var-write succeeded"
else
	say "var-write failed"
fi

while read -r _ mountpoint fstype options _; do
	case "$mountpoint" in
	/ | /usr | /var | /etc | /sysroot | /boot) say "mount $mountpoint $fstype $options" ;;
	esac
done </proc/mounts
say "done"
sync
echo o >/proc/sysrq-trigger
sleep 30
