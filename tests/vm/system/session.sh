#!/bin/sh
# The user-session check of the VM matrix (tests/vm/README.md): `pinfold
# exec` from a user's own systemd session, in a scope with Delegate=yes, the
# way runc and podman document rootless cgroup v2. guest.sh runs it (checks/60-units.sh, checks/70-session.sh) as root
# with the payload mounted at /payload. Three times, the user manager's
# delegation being:
#   stock:   user@.service as Debian 12 ships it (systemd 252);
#   partial: memory and pids only, as systemd before 252 delegates (Ubuntu
#            22.04), set by a drop-in `Delegate=` + `Delegate=pids memory`;
#   dropin:  the drop-in runc and podman document,
#            /etc/systemd/system/user@.service.d/delegate.conf:
#            [Service]
#            Delegate=cpu cpuset io memory pids
# Each time it records the controllers the user manager got and, as
# pinfold-test inside `systemd-run --user --scope -p Delegate=yes`, the
# --report of `pinfold exec` and what `pinfold doctor` printed. With the
# drop-in, 100 more runs, each in a scope of its own (hundred.sh), must
# leave no cgroup behind. Writes /share/out/session/: MODE-{controllers,report.json,
# exec.err,doctor.txt}, hundred.{txt,err}, results.txt and trace.log;
# summarize.py makes the "user session" column.
# Stops the user manager before it returns. About 2 minutes under TCG: with
# units.sh on the first kernel's row only (begin.sh).
check=session
. "${0%/*}/begin.sh"
o=$d
: >"$o/results.txt"
user=pinfold-test
uid=$(id -u $user)
w=/var/tmp/pv-session
rm -rf "$w"; mkdir -p "$w"
cp -a /payload/pinfold /payload/rootfs "$w/"
chown -R $user:$user "$w"
dropin=/etc/systemd/system/user@.service.d/delegate.conf
# logind (over the system bus) starts the lingering user's manager; the
# guest boots only pinfold-vm.service's dependencies, so start them here.
systemctl start dbus.socket dbus.service systemd-logind.service
loginctl enable-linger $user

# user_env CMD...: CMD as the user, with a login session's environment.
user_env() {
  setpriv --reuid=$user --regid=$user --init-groups env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    HOME="$w" PINFOLD_HOME="$w/home" XDG_RUNTIME_DIR=/run/user/$uid \
    DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/$uid/bus "$@"
}
# as_user CMD...: CMD as the user in a new scope of their manager, with
# Delegate=yes, as a login session's shell would run it.
as_user() {
  user_env systemd-run --user --scope --quiet -p Delegate=yes "$@"
}

mkdir -p "${dropin%/*}"
for mode in stock partial dropin; do
  case $mode in
  stock) rm -f "$dropin" ;;
  partial) printf '[Service]\nDelegate=\nDelegate=pids memory\n' >"$dropin" ;;
  dropin) printf '[Service]\nDelegate=cpu cpuset io memory pids\n' >"$dropin" ;;
  esac
  # enable-linger started the stock manager; the others need a reload.
  if [ $mode != stock ]; then
    systemctl daemon-reload
    systemctl restart user@$uid.service
  fi
  up=no
  for _ in $(seq 60); do
    [ -S /run/user/$uid/systemd/private ] && [ -S /run/user/$uid/bus ] && { up=yes; break; }
    sleep 0.5
  done
  mgr=/sys/fs/cgroup/user.slice/user-$uid.slice/user@$uid.service
  cat "$mgr/cgroup.controllers" >"$o/$mode-controllers" 2>&1
  (cd "$w" && as_user "$w/pinfold" exec --rootfs "$w/rootfs" --report "$w/$mode-report.json" -- /bin/true \
    </dev/null >"$o/$mode-exec.out" 2>"$o/$mode-exec.err")
  echo $? >"$o/$mode-exec.rc"
  cp "$w/$mode-report.json" "$o/$mode-report.json"
  (cd "$w" && as_user "$w/pinfold" doctor </dev/null >"$o/$mode-doctor.txt" 2>&1)
  if [ $mode = dropin ]; then
    cp /share/system/hundred.sh "$w/hundred.sh"
    (cd "$w" && user_env sh "$w/hundred.sh" "$w" </dev/null >"$o/hundred.txt" 2>&1)
    cp "$w/hundred.err" "$o/hundred.err" 2>/dev/null
  fi
  mech=$(sed -n 's/.*"limits_mechanism": *"\([^"]*\)".*/\1/p' "$o/$mode-report.json" 2>/dev/null)
  echo "$mode manager=$up mechanism=${mech:-none} controllers=$(tr ' ' ',' <"$o/$mode-controllers")" >>"$o/results.txt"
done
rm -f "$dropin"
loginctl disable-linger $user
systemctl stop user@$uid.service
exec 1>&3 2>&4
