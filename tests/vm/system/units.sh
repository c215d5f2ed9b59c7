#!/bin/sh
# The units check of the VM matrix (tests/vm/README.md): the Debian package
# and its systemd units on a real systemd 252 host. guest.sh runs it (checks/60-units.sh, checks/70-session.sh) as root
# with the payload mounted at /payload; it reads /payload/units/ (pinfold.deb,
# the busybox OCI layout and its digest, from tests/vm/run.sh) and writes
# /share/out/units/: checks.txt (one line per check, "ok NAME: detail" or
# "FAIL NAME: detail", which summarize.py turns into the "units/.deb"
# column), the logs it judged from, and trace.log.
#
# What it does, as an operator would: `dpkg -i` the package (user `pinfold`,
# its sub-id range, conffiles, units), starts pinfold-server, registers the
# agent with the README's second command, runs a job through it, then stops
# the agent with two jobs running (one that ends within the drain, one that
# does not) and checks the stop drains and ends within drain + grace + 5 s
# with no process left. Then purges the package. Every service it started is
# stopped before it returns (the guest powers off right after guest.sh).
# About 4 minutes under TCG, so run.sh runs it on the first kernel's row only
# (begin.sh); elsewhere it writes "skipped".
check=units
. "${0%/*}/begin.sh"
u=$d
P=/payload/units
DRAIN=15 GRACE=5
ok() { echo "ok $1: $2" >>"$u/checks.txt"; }
bad() { echo "FAIL $1: $2" >>"$u/checks.txt"; }
# judge NAME DETAIL CMD...: ok when CMD succeeds.
judge() { n=$1 d=$2; shift 2; if "$@"; then ok "$n" "$d"; else bad "$n" "$d"; fi; }
: >"$u/checks.txt"

# --- the package ------------------------------------------------------------
# The test's drain and concurrency, in a drop-in (as an operator would),
# written first so the postinst's daemon-reload reads it (each reload is ~9 s
# under TCG). A stop that overran systemd's own timeout would show as
# Result=timeout.
mkdir -p /etc/systemd/system/pinfold-agent.service.d
printf '[Service]\nEnvironment=PINFOLD_DRAIN=%ss PINFOLD_GRACE=%ss PINFOLD_CONCURRENCY=2\nTimeoutStopSec=90s\n' $DRAIN $GRACE \
  >/etc/systemd/system/pinfold-agent.service.d/vm-test.conf
cp /etc/subuid "$u/subuid-before"; cp /etc/subgid "$u/subgid-before"
dpkg -i "$P/pinfold.deb" >"$u/dpkg-install.log" 2>&1
rc=$?
judge dpkg-install "dpkg -i exit $rc; $(grep -ci 'warn\|error' "$u/dpkg-install.log") warnings" \
  sh -c "[ $rc = 0 ] && ! grep -qi 'warn\|error' '$u/dpkg-install.log'"
cp /etc/subuid "$u/subuid-after"; cp /etc/subgid "$u/subgid-after"
getent passwd pinfold >"$u/passwd" 2>&1
judge user "$(cut -d: -f1,3,6,7 "$u/passwd")" grep -q '^pinfold:x:[0-9]*:[0-9]*:.*:/var/lib/pinfold:/usr/sbin/nologin$' "$u/passwd"
# The existing ranges are kept as they were, and pinfold's own range overlaps none.
for f in subuid subgid; do
  judge "$f-kept" "earlier lines unchanged" sh -c "head -n \$(wc -l <'$u/$f-before') '$u/$f-after' | cmp -s - '$u/$f-before'"
  judge "$f-range" "$(grep '^pinfold:' "$u/$f-after" | tr '\n' ' ')" awk -F: '
    $1 == "pinfold" { n++; s = $2; e = $2 + $3 }
    $1 != "pinfold" && NF >= 3 { o[++k] = $2 " " $2 + $3 }
    END {
      if (n != 1 || e - s != 65536) exit 1
      for (i in o) { split(o[i], r, " "); if (s < r[2] && r[1] < e) exit 1 }
    }' "$u/$f-after"
done
dpkg-query -W -f='${Conffiles}\n' pinfold >"$u/conffiles" 2>&1
judge conffiles "$(grep -c /etc/pinfold/policies "$u/conffiles") under /etc/pinfold/policies" \
  sh -c "for c in default.toml trusted.toml untrusted.toml seccomp/pinfold.json; do grep -q \" /etc/pinfold/policies/\$c \" '$u/conffiles' && [ -s /etc/pinfold/policies/\$c ] || exit 1; done"
judge units-installed "pinfold-agent, pinfold-agent@, pinfold-server in /lib/systemd/system" \
  sh -c 'for n in pinfold-agent.service pinfold-agent@.service pinfold-server.service; do [ -f /lib/systemd/system/$n ] || exit 1; done'
# Debian 12's AppArmor is 3.0: the postinst must not install the profile
# (the parser cannot read abi 4.0), and AppArmor must stay loaded.
aa="profile /usr/share/pinfold/apparmor/pinfold"
[ -e /etc/apparmor.d/abi/4.0 ] && aa="$aa, abi 4.0 present" || aa="$aa, abi 4.0 absent"
apparmor_parser --version 2>&1 | head -1 >"$u/apparmor-version"
systemctl is-active apparmor.service >"$u/apparmor-active" 2>&1
if [ -e /etc/apparmor.d/abi/4.0 ]; then
  judge apparmor "$aa; loaded: $(grep -c '^pinfold ' /sys/kernel/security/apparmor/profiles 2>/dev/null)" \
    grep -q '^pinfold (unconfined)' /sys/kernel/security/apparmor/profiles
else
  judge apparmor "$aa: not copied to /etc/apparmor.d; $(cat "$u/apparmor-version"); apparmor.service $(cat "$u/apparmor-active")" \
    sh -c '[ -f /usr/share/pinfold/apparmor/pinfold ] && [ ! -e /etc/apparmor.d/pinfold ] && [ "$(cat '"$u/apparmor-active"')" = active ]'
fi

# --- server and agent ---------------------------------------------------------
tok() { printf '%s%s' "$1" "$(od -An -N32 -tx1 /dev/urandom | tr -d ' \n')"; }
admin=$(tok pfa_) reg=$(tok pfg_)
(umask 077; printf 'PINFOLD_ADMIN_TOKEN=%s\nPINFOLD_REGISTRATION_TOKEN=%s\n' "$admin" "$reg" >/etc/pinfold/server.env)
systemctl start pinfold-server >"$u/server-start.log" 2>&1
export PINFOLD_SERVER=http://127.0.0.1:8080 PINFOLD_TOKEN="$admin"
up=no
for _ in $(seq 60); do pinfold jobs >/dev/null 2>&1 && { up=yes; break; }; sleep 0.5; done
judge server-up "answers on 127.0.0.1:8080: $up; $(systemctl is-active pinfold-server)" [ $up = yes ]
# The README's second command, word for word but for the server and token,
# and PINFOLD_ALLOW_LOCAL_IMAGES: the jobs here use an oci: layout.
sh -c 'umask 077; printf "PINFOLD_SERVER=%s\nPINFOLD_REGISTRATION_TOKEN=%s\nPINFOLD_ALLOW_LOCAL_IMAGES=true\n" http://127.0.0.1:8080 '"$reg"' >/etc/pinfold/agent.env && systemctl enable --now pinfold-agent' \
  >"$u/agent-start.log" 2>&1
# Registered: the runner token the agent keeps in its state directory.
reg_ok=no
for _ in $(seq 60); do ls /var/lib/pinfold/agent/runner-*.json >/dev/null 2>&1 && { reg_ok=yes; break; }; sleep 0.5; done
judge agent-registered "pinfold-agent $(systemctl is-active pinfold-agent); runner token stored: $reg_ok" [ $reg_ok = yes ]

img="oci:$P/layout@$(cat "$P/digest")"
job() { printf 'image: %s\ntimeout: 15m\nsteps:\n  - name: %s\n    run: %s\n' "$img" "$1" "$2" >"$u/$1.yaml"; }
job short 'echo job-ran-as-$(id -u); sleep 3; echo job-done'
t=$(date +%s)
timeout 240 pinfold submit --wait "$u/short.yaml" >"$u/short.log" 2>&1
rc=$?
judge job "pinfold submit --wait exit $rc in $(( $(date +%s) - t )) s" sh -c "[ $rc = 0 ] && grep -q job-done '$u/short.log'"
# The unit's Delegate=yes gives the job cgroup v2 limits (issue 15 §2).
lim=$(sed -n 's/^==> limits enforced by \([a-z0-9 ]*\).*/\1/p' "$u/short.log" | head -1)
why=$(grep -m1 'limits enforced by' "$u/short.log" | grep -o '[A-Za-z ]* (os error [0-9]*)' | sed 's/^ *//')
judge agent-cgroup "limits by ${lim:-?}${why:+: $why}" grep -q '^==> limits enforced by cgroup v2' "$u/short.log"

# --- stop mid-job: one job finishes within the drain, one is cancelled -------
job fits "echo fits-started; sleep $((DRAIN / 2)); echo fits-done"
job long 'echo long-started; sleep 600; echo long-done'
a=$(pinfold submit "$u/fits.yaml" 2>>"$u/submit.err") b=$(pinfold submit "$u/long.yaml" 2>>"$u/submit.err")
started=no
for _ in $(seq 120); do
  pinfold logs "$a" 2>/dev/null | grep -q fits-started && pinfold logs "$b" 2>/dev/null | grep -q long-started && { started=yes; break; }
  pinfold status "$a" 2>/dev/null | grep -Eq '^job [0-9]+: (failed|error|cancelled|timed_out)' && break
  pinfold status "$b" 2>/dev/null | grep -Eq '^job [0-9]+: (failed|error|cancelled|timed_out)' && break
  sleep 0.5
done
judge two-jobs-running "jobs $a and $b started: $started" [ $started = yes ]
t0=$(date +%s.%N)
timeout 120 systemctl stop pinfold-agent
t1=$(date +%s.%N)
stop=$(echo "$t0 $t1" | awk '{printf "%.1f", $2 - $1}')
systemctl show pinfold-agent -p Result -p ActiveState -p ExecMainCode -p ExecMainStatus -p NRestarts >"$u/agent-show.txt"
journalctl -u pinfold-agent --no-pager -o short-monotonic >"$u/agent-journal.txt" 2>&1
pinfold status "$a" >"$u/fits-status.txt" 2>&1
pinfold status "$b" >"$u/long-status.txt" 2>&1
pinfold logs "$a" >"$u/fits.log" 2>&1
pinfold logs "$b" >"$u/long.log" 2>&1
bound=$((DRAIN + GRACE + 5))
judge stop-time "stop took ${stop} s (drain ${DRAIN} s, bound ${bound} s)" \
  awk -v s="$stop" -v lo="$DRAIN" -v hi="$bound" 'BEGIN { exit !(s >= lo - 1 && s <= hi) }'
judge stop-result "$(tr '\n' ' ' <"$u/agent-show.txt")" \
  sh -c "grep -qx Result=success '$u/agent-show.txt' && grep -qx ActiveState=inactive '$u/agent-show.txt'"
judge drained "$(head -1 "$u/fits-status.txt")" sh -c "grep -q ': succeeded' '$u/fits-status.txt' && grep -q fits-done '$u/fits.log'"
judge cancelled-at-deadline "$(head -2 "$u/long-status.txt" | tr '\n' ' ')" \
  sh -c "grep -q ': cancelled' '$u/long-status.txt' && ! grep -q long-done '$u/long.log'"
# Nothing of the agent is left: no process of user pinfold or of its sub-ids,
# no process in the unit's cgroup.
pu=$(id -u pinfold)
ps -eo uid=,pid=,args= >"$u/ps-after-stop.txt"
sub=$(awk -F: '$1 == "pinfold" { print $2, $2 + $3 }' /etc/subuid)
left=$(awk -v pu="$pu" -v r="$sub" 'BEGIN { split(r, s, " ") } $1 == pu || ($1 >= s[1] && $1 < s[2])' "$u/ps-after-stop.txt" | wc -l)
cg=/sys/fs/cgroup/system.slice/pinfold-agent.service
incg=$(find "$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | wc -l)
judge nothing-left "$left processes of pinfold or its sub-ids, $incg in $cg" [ "$left$incg" = 00 ]

systemctl stop pinfold-server
systemctl show pinfold-server -p Result -p ActiveState >"$u/server-show.txt"
judge server-stop "$(tr '\n' ' ' <"$u/server-show.txt")" grep -qx Result=success "$u/server-show.txt"
journalctl -u pinfold-server --no-pager >"$u/server-journal.txt" 2>&1

# --- purge -----------------------------------------------------------------------
# prerm disables the enabled agent; the conffiles go; the user and its
# ranges stay (Debian removes no system user).
dpkg -P pinfold >"$u/dpkg-purge.log" 2>&1
judge dpkg-purge "exit $?; binary, policies and unit links gone, user and ranges kept" \
  sh -c "[ $? = 0 ] && [ ! -e /usr/bin/pinfold ] && [ ! -e /etc/pinfold/policies/default.toml ] && [ ! -e /etc/systemd/system/multi-user.target.wants/pinfold-agent.service ] && getent passwd pinfold >/dev/null && grep -q '^pinfold:' /etc/subuid"
systemctl --no-pager list-units --all 'pinfold*' >"$u/units-at-end.txt" 2>&1
exec 1>&3 2>&4
