#!/bin/sh
# Runs inside a matrix guest (tests/vm/run.sh), as root from the oneshot
# pinfold-vm.service (Delegate=yes), then the unit powers the guest off.
# Reads /payload (the read-only disk /dev/vdb: pinfold, the busybox rootfs
# with /bin/probe, the images' OCI layouts, pasta) and writes raw results to
# /share/out/ (the 9p share), then /share/out/done. Each check is one file,
# /share/checks/NN-NAME.sh (tests/vm/checks/), sourced in order with the
# helpers below; it writes only files named after itself, and guest.sh
# records its seconds in /share/out/time-NAME. tests/vm/summarize.py turns
# the files into the row. No `set -e`: every check runs and records its own
# status.
set -u
out=/share/out
mkdir -p "$out"
exec >"$out/guest.log" 2>&1
PS4='+ $(date +%T) '
set -x
uname -r >"$out/uname"
stat -fc %T /sys/fs/cgroup >"$out/cgroup-fs"
cat /proc/self/cgroup >"$out/cgroup-self"
cat /sys/fs/cgroup/cgroup.controllers >"$out/cgroup-controllers" 2>&1
modprobe overlay
mkdir -p /payload
mount -t ext4 -o ro,noload /dev/vdb /payload
# Busybox from the payload's rootfs, for the guest-side helpers (listeners,
# wget): the Debian root is minbase.
bb=/payload/rootfs/bin/busybox

# One work directory per identity: WHO is "user" (pinfold-test, unprivileged)
# or "root" (in this unit's delegated cgroup).
for who in user root; do
  w=/var/tmp/pv-$who
  rm -rf "$w"; mkdir -p "$w"
  cp -a /payload/. "$w/"
  [ $who = user ] && chown -R pinfold-test:pinfold-test "$w"
  chmod 755 "$w"
done
# asu WHO CMD...: CMD as WHO.
asu() {
  if [ "$1" = user ]; then shift; setpriv --reuid=pinfold-test --regid=pinfold-test --init-groups "$@"
  else shift; "$@"; fi
}
# pf WHO ARGS...: pinfold ARGS as WHO, in WHO's work directory and home.
# The user runs where this unit put it, without delegation (the fallback
# limits); root runs in a scope of its own with Delegate=yes, as a runner
# would under systemd (cgroup v2 limits: pinfold must be alone in its
# cgroup, and this unit's cgroup holds guest.sh).
pf() {
  _who=$1; shift
  _w=/var/tmp/pv-$_who
  if [ "$_who" = root ]; then set -- systemd-run --scope -p Delegate=yes -q -- "$_w/pinfold" "$@"
  else set -- "$_w/pinfold" "$@"; fi
  (cd "$_w" && asu "$_who" env -i PATH=/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME="$_w" \
    PINFOLD_HOME="$_w/home" "$@")
}

for check in /share/checks/*.sh; do
  name=$(basename "$check" .sh); name=${name#*-}
  t0=$(date +%s)
  . "$check"
  echo $(( $(date +%s) - t0 )) >"$out/time-$name"
done
touch "$out/done"
