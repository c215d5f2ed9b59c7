#!/bin/sh
# "No cgroup is left behind after 100 runs" (issue: cgroup v2 delegation).
# session.sh runs this as pinfold-test, whose user manager has the
# documented drop-in. Each of 100 `pinfold exec` runs starts as the docs
# say, alone in a `systemd-run --user --scope -p Delegate=yes` scope, so
# each picks cgroup v2 and makes its own cgroups under its scope. The runs
# are mixed: /bin/true, a failing exit, a --timeout kill with a setsid'd
# daemon left running, and a memory bomb that memory.max ends. Under cgroup
# v2 a process cannot remove the cgroup it is in: pinfold removes the job's
# cgroup (cgroup.kill, then rmdir) and systemd removes the scope with
# pinfold's own leaf once pinfold has exited. Prints one line per kind
# (count, ok/bad, exit code, limit, mechanism), then `left: N` and the
# scopes and pinfold-* cgroups still in the user manager's tree.
# Usage: hundred.sh DIR (with DIR/pinfold and DIR/rootfs).
set -u
w=$1
mgr=/sys/fs/cgroup/user.slice/user-$(id -u).slice/user@$(id -u).service

# one KIND EXPECTED_RC EXEC_ARGS...: one run in a scope of its own; appends
# "KIND ok|bad rc=RC limit=L mechanism=M" to $w/hundred.log.
one() {
  kind=$1 want=$2; shift 2
  rm -f "$w/h.json"
  systemd-run --user --scope --quiet -p Delegate=yes \
    "$w/pinfold" exec --rootfs "$w/rootfs" --report "$w/h.json" "$@" </dev/null >/dev/null 2>>"$w/hundred.err"
  rc=$?
  mech=$(sed -n 's/.*"limits_mechanism": *"\([^"]*\)".*/\1/p' "$w/h.json" 2>/dev/null)
  limit=$(sed -n 's/.*"limit": *"\([^"]*\)".*/\1/p' "$w/h.json" 2>/dev/null)
  ok=ok; [ "$rc" = "$want" ] || ok=bad
  echo "$kind $ok rc=$rc limit=${limit:-none} mechanism=${mech:-none}" >>"$w/hundred.log"
}
: >"$w/hundred.log"
for i in $(seq 100); do
  case $((i % 10)) in
  8) one fail 3 -- /bin/sh -c 'exit 3' ;;
  9) one timeout 124 --timeout 1s -- /bin/sh -c 'setsid sleep 600 & sleep 600' ;;
  0) one bomb 123 --limit memory=32M --timeout 60s -- /bin/sh -c 'dd if=/dev/zero of=/dev/null bs=128M count=10 2>/dev/null' ;;
  *) one true 0 -- /bin/true ;;
  esac
done
sort "$w/hundred.log" | uniq -c | sed 's/^ *//'
# systemd removes a scope shortly after its last process exits.
for _ in $(seq 50); do
  left=$(find "$mgr" -mindepth 1 -type d \( -name 'run-*.scope' -o -name 'pinfold-*' \) 2>/dev/null)
  [ -z "$left" ] && break
  sleep 0.2
done
echo "left: $(printf '%s' "$left" | grep -c .) $left"
echo "procs: $(pgrep -u "$(id -u)" -f 'sleep 600' | grep -c .)"
