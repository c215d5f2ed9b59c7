# Sourced by the scripts in this directory (units.sh, session.sh) with
# $check set: empties their results directory /share/out/$check ($d); on
# every row but the first kernel's (run.sh puts units.on beside the checks
# there) writes "skipped" and exits; then traces every command, timed, into
# $d/trace.log (fds 3 and 4 keep guest.sh's stdout and stderr).
set -u
d=/share/out/$check
rm -rf "$d"; mkdir -p "$d"
if [ ! -e "${0%/*}/units.on" ]; then
  echo "runs on the first kernel's row only" >"$d/skipped"
  exit 0
fi
exec 3>&1 4>&2 >"$d/trace.log" 2>&1
PS4='+ $(date +%T) '
set -x
