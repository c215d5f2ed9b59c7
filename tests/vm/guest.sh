#!/bin/sh
# Runs inside a matrix guest (tests/vm/run.sh), as root from the oneshot
# pinfold-vm.service (Delegate=yes), then the unit powers the guest off.
# Reads /payload (the read-only disk /dev/vdb: pinfold, the busybox rootfs
# with /bin/probe, the whiteout image's OCI layout) and writes raw results to
# /share/out/ (the 9p share): uname, cgroup-fs, doctor-{user,root}.json,
# probes-{POLICY}-{user,root}.txt (+ .err, .rc), whiteout-{user,root}.txt
# (+ .err, .rc), report-{user,root}.json, guest.log (the trace),
# then /share/out/done. tests/vm/summarize.py turns them into the row.
# No `set -e`: every check runs and records its own status.
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
PROBES="mount umount pivot_root chroot unshare-user unshare-mount clone-newuser setns keyctl add_key bpf perf_event_open io_uring_setup userfaultfd open_by_handle_at kexec_load init_module tiocsti tiocsti-plain ptrace-init"

for who in user root; do
  w=/var/tmp/pv-$who
  rm -rf "$w"; mkdir -p "$w"
  cp -a /payload/. "$w/"
  if [ $who = user ]; then
    chown -R pinfold-test:pinfold-test "$w"
    asu() { setpriv --reuid=pinfold-test --regid=pinfold-test --init-groups "$@"; }
  else
    asu() { "$@"; }
  fi
  chmod 755 "$w"
  pf() { asu env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$w" PINFOLD_HOME="$w/home" "$w/pinfold" "$@"; }
  (cd "$w" && pf doctor --json >"$out/doctor-$who.json" 2>"$out/doctor-$who.err")
  for pol in default untrusted; do
    (cd "$w" && pf exec --rootfs "$w/rootfs" --policy $pol -- /bin/sh -c \
      "for p in $PROBES; do /bin/probe \$p; done; /bin/probe write-file /proc/1/exe; echo PROBES-DONE" \
      >"$out/probes-$pol-$who.txt" 2>"$out/probes-$pol-$who.err" </dev/null)
    echo $? >"$out/probes-$pol-$who.rc"
  done
  (cd "$w" && pf exec --rootfs "$w/rootfs" --report "$w/report.json" -- /bin/true </dev/null)
  cp "$w/report.json" "$out/report-$who.json"
  ref="oci:$w/layout:busybox"
  (cd "$w" && pf image import "$ref" >"$out/whiteout-$who.err" 2>&1 \
    && pf exec --image "$ref" -- /bin/sh -c \
      'if [ -e /bin/yes ] || [ -L /bin/yes ]; then echo "yes-present"; else echo "yes-gone"; fi; test -e /bin/cat && echo cat-present' \
      >"$out/whiteout-$who.txt" 2>>"$out/whiteout-$who.err" </dev/null)
  echo $? >"$out/whiteout-$who.rc"
done
# Self-contained checks, each writing under $out (tests/vm/checks/).
sh "${0%/*}/checks/units.sh"
sh "${0%/*}/checks/session.sh"
touch "$out/done"
