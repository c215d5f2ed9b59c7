# Check "bombs" (sourced by tests/vm/guest.sh): a memory bomb, a memfd
# written and never mapped (a shared-memory trick of issue 7), a fork bomb,
# a CPU burner and a /tmp fill, each with a small --limit and a --timeout
# that bounds it if the limit does not, as the user and as root. The
# --report JSON says which limit ended it and by which mechanism: the
# fallback for the user, cgroup v2 for root (its own delegated scope, see
# pf in guest.sh), where three more memory tricks are charged too.
# Writes bomb-NAME-WHO.{json,err,rc}.
bomb() { # bomb NAME WHO LIMIT CMD...
  _n=$1 _who=$2 _lim=$3; shift 3
  _w=/var/tmp/pv-$_who
  rm -f "$_w/bomb.json"
  pf $_who exec --rootfs "$_w/rootfs" --limit "$_lim" --timeout 60s --report "$_w/bomb.json" -- "$@" \
    >/dev/null 2>"$out/bomb-$_n-$_who.err" </dev/null
  echo $? >"$out/bomb-$_n-$_who.rc"
  cp "$_w/bomb.json" "$out/bomb-$_n-$_who.json"
}
for who in user root; do
  bomb mem $who memory=64M /bin/sh -c 'dd if=/dev/zero of=/dev/null bs=256M count=200 2>/dev/null'
  bomb memfd $who memory=64M /bin/probe mem memfd-write 512
  bomb pids $who pids=64 /bin/probe forkbomb 45
  bomb cpu $who cpu_time=1s /bin/sh -c '(while :; do :; done) & while :; do :; done'
  bomb disk $who tmp_size=1M /bin/sh -c 'dd if=/dev/zero of=/tmp/fill bs=64k count=64'
done
# The other memory tricks of issue 7, where cgroup v2 charges them (root's
# delegated scope): shared anonymous memory, a mapped memfd, /dev/shm files.
bomb shanon root memory=64M /bin/probe mem shared-anon 512
bomb memfdmap root memory=64M /bin/probe mem memfd-mapped 512
bomb devshm root memory=64M /bin/sh -c 'dd if=/dev/zero of=/dev/shm/fill bs=1M count=200; sleep 1'

