# Sourced by tests/run.sh and tests/demo.sh: puts cargo on PATH. Both are run
# through sudo (the README's commands), and sudo's secure_path drops the
# ~/.cargo/bin where rustup installs the toolchain; find it in root's home or
# in the home of the user who called sudo.
if ! command -v cargo >/dev/null; then
  for h in "$HOME" "$(getent passwd "${SUDO_USER:-}" | cut -d: -f6)"; do
    if [ -n "$h" ] && [ -x "$h/.cargo/bin/cargo" ]; then
      export PATH="$h/.cargo/bin:$PATH"
      export CARGO_HOME="${CARGO_HOME:-$h/.cargo}" RUSTUP_HOME="${RUSTUP_HOME:-$h/.rustup}"
      break
    fi
  done
fi
command -v cargo >/dev/null || {
  echo "$0: cargo not found: install a Rust toolchain (https://rustup.rs) first" >&2
  exit 1
}
