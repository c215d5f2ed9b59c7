# Check "network" (sourced by tests/vm/guest.sh): the three network modes,
# as the unprivileged user, against listeners this guest runs itself:
#   127.0.0.1:8080 and :8081   two loopback services (distinct markers)
#   0.0.0.0:8082               a service on every address of the guest,
#                              among them 10.77.0.2 (the veth's, which pasta
#                              copies into the container, so there it is the
#                              container's own) and 10.78.0.1 (a dummy
#                              interface's: the guest's "other" address)
#   netns "pfout"              an "outside" host over a veth: the gateway
#                              10.77.0.1 (on-link, private) and a public
#                              address 192.0.43.80 routed through it (host
#                              routes only: nothing leaves the guest, which
#                              has no NIC), both serving :8080
# Each container prints "@label" before each probe; network-pre.txt is what
# the guest itself reaches (so a refusal inside means pinfold refused), with
# the same static probe (the payload's busybox wget crashes outside its
# rootfs).
# Writes network-{pre,none,allowlist,egress}.txt (+ .err, .rc).
for d in lo-allowed lo-unlisted own outside; do
  mkdir -p /var/tmp/www-$d; echo "marker $d" >/var/tmp/www-$d/marker.txt
done
ip link set lo up
$bb httpd -f -p 127.0.0.1:8080 -h /var/tmp/www-lo-allowed & h1=$!
$bb httpd -f -p 127.0.0.1:8081 -h /var/tmp/www-lo-unlisted & h2=$!
$bb httpd -f -p 0.0.0.0:8082 -h /var/tmp/www-own & h3=$!
ip netns add pfout
ip link add pfh type veth peer name pfo
ip link set pfo netns pfout
ip addr add 10.77.0.2/24 dev pfh
ip link set pfh up
ip -n pfout link set lo up
ip -n pfout addr add 10.77.0.1/24 dev pfo
ip -n pfout addr add 192.0.43.80/32 dev pfo
ip -n pfout link set pfo up
ip -n pfout route add default via 10.77.0.2
# pasta attaches to the interface with the default route.
ip route add default via 10.77.0.1
modprobe dummy
ip link add pfd type dummy
ip addr add 10.78.0.1/24 dev pfd
ip link set pfd up
ip netns exec pfout $bb httpd -f -p 0.0.0.0:8080 -h /var/tmp/www-outside & h4=$!
grep -q '^nameserver' /etc/resolv.conf 2>/dev/null || echo "nameserver 10.77.0.1" >/etc/resolv.conf
# egress: pasta from the payload (the host's passt), /dev/net/tun for the user.
[ -x /payload/pasta ] && install -m755 /payload/pasta /usr/local/bin/pasta
modprobe tun
chmod 0666 /dev/net/tun
sleep 1
{
  for t in 127.0.0.1:8080 127.0.0.1:8081 10.77.0.2:8082 10.78.0.1:8082 10.77.0.1:8080 192.0.43.80:8080; do
    echo "@$t"; /payload/rootfs/bin/probe http-get "${t%:*}" "${t#*:}" /marker.txt 2>&1
  done
  echo "@pasta"; command -v pasta || echo "absent"
} >"$out/network-pre.txt"
w=/var/tmp/pv-user
asu user sh -c "cat >$w/allowlist.toml" <<'TOML'
description = "tests/vm: allowlist naming one loopback service"
[network]
mode = "allowlist"
loopback_tcp = false
allow = ["127.0.0.1:8080"]
TOML
net() { # net MODE POLICY SCRIPT
  pf user exec --rootfs "$w/rootfs" --policy "$2" --network "$1" --timeout 60s -- /bin/sh -c "$3" \
    >"$out/network-$1.txt" 2>"$out/network-$1.err" </dev/null
  echo $? >"$out/network-$1.rc"
}
net none default '
  echo @interfaces; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d " " | tr "\n" " "; echo
  echo @loopback; /bin/probe connect 127.0.0.1 8080
  echo @own; /bin/probe connect 10.77.0.2 8082
  echo @outside; /bin/probe connect 192.0.43.80 8080'
net allowlist "$w/allowlist.toml" '
  echo @proxy; echo "$http_proxy"
  echo @allowed; env -u no_proxy -u NO_PROXY wget -q -O - http://127.0.0.1:8080/marker.txt 2>&1; echo "rc=$?"
  echo @unlisted; env -u no_proxy -u NO_PROXY wget -q -O - http://127.0.0.1:8081/marker.txt 2>&1; echo "rc=$?"
  echo @direct; /bin/probe connect 127.0.0.1 8080'
net egress trusted '
  echo @outside; /bin/probe http-get 192.0.43.80 8080 /marker.txt
  echo @gateway; /bin/probe connect 10.77.0.1 8080
  echo @own-copied; /bin/probe connect 10.77.0.2 8082
  echo @own-other; /bin/probe connect 10.78.0.1 8082
  echo @loopback; /bin/probe connect 127.0.0.1 8080'
kill $h1 $h2 $h3 $h4
ip route del default via 10.77.0.1
ip link del pfh
ip link del pfd
ip netns del pfout
