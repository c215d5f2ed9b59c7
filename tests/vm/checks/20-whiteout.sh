# Check "whiteout" (sourced by tests/vm/guest.sh): image import + exec
# --image of the whiteout image (tests/make-whiteout-image.sh), as the user
# and as root. Its tree inside, listed by list-tree.sh into whiteout-WHO.txt;
# the host compares it with umoci's unpack (tests/vm/tree.py, summarize.py).
# Writes whiteout-WHO.{txt,err,rc}.
for who in user root; do
  w=/var/tmp/pv-$who
  ref="oci:$w/layout:wh"
  pf $who image import "$ref" >"$out/whiteout-$who.err" 2>&1 \
    && pf $who exec --image "$ref" -- /bin/sh -c "$(cat "$w/list-tree.sh")" \
      >"$out/whiteout-$who.txt" 2>>"$out/whiteout-$who.err" </dev/null
  echo $? >"$out/whiteout-$who.rc"
done
