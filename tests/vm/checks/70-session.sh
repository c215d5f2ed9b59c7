# Check "session" (sourced by tests/vm/guest.sh): user-session delegation,
# run as a script of its own (tests/vm/system/session.sh).
sh /share/system/session.sh
