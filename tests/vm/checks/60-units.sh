# Check "units" (sourced by tests/vm/guest.sh): the .deb and its systemd
# units, run as a script of its own (tests/vm/system/units.sh).
sh /share/system/units.sh
