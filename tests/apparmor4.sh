#!/usr/bin/env bash
# Unpacks Debian 13 (trixie)'s AppArmor 4.x parser into tests/.cache/apparmor4
# (git-ignored) for tests/host.rs.
#
# Why: ci-templates/apparmor/pinfold needs AppArmor 4.0 (`abi <abi/4.0>,` and
# the `userns,` rule), which Debian 12's own apparmor_parser (3.0) cannot
# parse. The test parses the profile as shipped with trixie's parser, run in
# place: trixie's apparmor_parser needs glibc 2.38 (bookworm has 2.36) and no
# other shared library, so trixie's libc6 is unpacked beside it and the test
# starts the parser through that libc's own loader. Nothing is installed on
# the host: apt resolves and downloads through a configuration of its own
# under the cache (its own sources list, lists and archives, signed by
# Debian's archive key); the host's sources are not touched.
#
# Run as root by tests/setup.sh; idempotent: a cache that holds the
# packages below and a parser that reports 4.x is left as it is, offline.
# Only the unpacked tree is kept (about 18 MB; apt's lists and the .debs
# are removed once it runs).
set -euo pipefail

SUITE=trixie
DEBS=(apparmor libc6)

die() { echo "tests/apparmor4.sh: $*" >&2; exit 1; }

cache=$(cd "$(dirname "$0")" && pwd)/.cache/apparmor4
root=$cache/root
key="$SUITE ${DEBS[*]}"
# The parser as tests/host.rs runs it (--version only here).
parser() {
  "$root/usr/lib64/ld-linux-x86-64.so.2" \
    --library-path "$root/usr/lib/x86_64-linux-gnu" \
    "$root/usr/sbin/apparmor_parser" "$@"
}
is4() { [[ "$(parser --version 2>/dev/null)" == "AppArmor parser version 4."* ]]; }

if [ "$(head -1 "$cache/.unpacked" 2>/dev/null)" = "$key" ] && is4; then
  exit 0
fi
[ "$(dpkg --print-architecture)" = amd64 ] || die "needs an amd64 host (the test runs trixie's amd64 parser)"

apt_dir=$cache/apt
apt=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o Dir::Etc::SourceParts=/dev/null
     -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache=$apt_dir/cache" -o APT::Architectures=amd64)
rm -rf "$apt_dir" "$root" "$cache/.unpacked"
mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs" "$root"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian $SUITE main" >"$apt_dir/sources.list"
apt-get "${apt[@]}" update -qq >/dev/null 2>"$apt_dir/update.err" \
  || die "apt-get update of $SUITE failed (see $apt_dir/update.err): is deb.debian.org reachable?"
# apt warns when its _apt user cannot write the download directory and then
# downloads as root: the log keeps that warning out of the way.
(cd "$apt_dir/debs" && apt-get "${apt[@]}" download -q "${DEBS[@]}" >/dev/null 2>"$apt_dir/download.err") \
  || die "apt-get download ${DEBS[*]} from $SUITE failed (see $apt_dir/download.err)"
versions=()
for deb in "$apt_dir/debs"/*.deb; do
  dpkg-deb -x "$deb" "$root" || die "dpkg-deb -x $deb failed"
  versions+=("$(dpkg-deb -f "$deb" Package)=$(dpkg-deb -f "$deb" Version)")
done
is4 || die "$SUITE's apparmor_parser does not run as version 4.x through its own libc (try: $root/usr/lib64/ld-linux-x86-64.so.2 --library-path $root/usr/lib/x86_64-linux-gnu $root/usr/sbin/apparmor_parser --version)"
rm -rf "$apt_dir"
printf '%s\n%s\n' "$key" "${versions[*]}" >"$cache/.unpacked"
echo "tests/apparmor4.sh: unpacked ${versions[*]} into $root"
