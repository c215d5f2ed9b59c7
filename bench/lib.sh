# The set-up the bench scripts and tests/demo.sh share. Source it from the
# repository root (they `cd "$(dirname "$0")/.."` first).

# pinfold_bin PROFILE [BINARY]: prints BINARY when one is given, else builds
# pinfold with `cargo build --profile PROFILE` and prints where it is.
pinfold_bin() {
  if [ -n "${2:-}" ]; then
    echo "$2"
    return
  fi
  # Called as bin=$(pinfold_bin ...): set -e does not reach into $(...),
  # so a failed build must stop here, not print a stale binary's path.
  cargo build --profile "$1" --quiet -p pinfold -p pinfold-exec || return 1
  echo "${CARGO_TARGET_DIR:-target}/$1/pinfold"
}

# make_work PREFIX [BINARY]: a scratch directory /tmp/PREFIX-XXXXXX in
# $work, mode 755 (the test user reads it), removed when the script exits;
# with BINARY, a copy of it at $work/pinfold.
make_work() {
  work=$(mktemp -d "/tmp/$1-XXXXXX")
  trap 'rm -rf "$work"' EXIT
  chmod 755 "$work"
  if [ -n "${2:-}" ]; then
    cp "$2" "$work/pinfold"
  fi
}

# bench_work PREFIX PROFILE: the pinfold a bench measures in $bin
# ($PINFOLD_BIN when set, else the PROFILE build) and a fresh $work
# (make_work PREFIX) holding a copy of it at $work/pinfold.
bench_work() {
  bin=$(pinfold_bin "$2" "${PINFOLD_BIN:-}") || exit 1
  make_work "$1" "$bin"
}

# own_work [USER]: run as root, gives $work to USER (pinfold-test by
# default) and sets as_user to the command prefix that runs as USER;
# otherwise as_user is empty and commands run as the caller.
own_work() {
  as_user=()
  if [ "$(id -u)" = 0 ]; then
    chown -R "${1:-pinfold-test}": "$work"
    as_user=("$(command -v runuser)" -u "${1:-pinfold-test}" --)
  fi
}
