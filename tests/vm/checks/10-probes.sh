# Check "probes" (sourced by tests/vm/guest.sh): doctor --json (as the user:
# ~15 s under TCG), the escape probes under default and untrusted, and the
# limits mechanism of a plain run's --report, as the user and as root; the
# *-outside probes (what stands in for Landlock on older kernels) aim at
# `probe outside`, run beside the container as its user.
# Writes doctor-user.json, probes-POLICY-WHO.{txt,err,rc}, report-WHO.json.
PROBES="mount umount pivot_root chroot unshare-user unshare-mount clone-newuser setns keyctl add_key bpf perf_event_open io_uring_setup userfaultfd open_by_handle_at kexec_load init_module tiocsti tiocsti-plain ptrace-init truncate-ro tcp-outside abstract-outside kill-outside"
for who in user root; do
  w=/var/tmp/pv-$who
  [ $who = user ] && pf $who doctor --json >"$out/doctor-$who.json" 2>"$out/doctor-$who.err"
  # The *-outside probes' target, outside the container as its user; pid in the rootfs.
  asu $who "$w/rootfs/bin/probe" outside "$w/rootfs/outside.pid" & sleep 1
  for pol in default untrusted; do
    pf $who exec --rootfs "$w/rootfs" --policy $pol -- /bin/sh -c \
      "for p in $PROBES; do /bin/probe \$p; done; /bin/probe write-file /proc/1/exe; echo PROBES-DONE" \
      >"$out/probes-$pol-$who.txt" 2>"$out/probes-$pol-$who.err" </dev/null
    echo $? >"$out/probes-$pol-$who.rc"
  done
  kill "$(cat "$w/rootfs/outside.pid")"
  pf $who exec --rootfs "$w/rootfs" --report "$w/report.json" -- /bin/true </dev/null
  cp "$w/report.json" "$out/report-$who.json"
done
