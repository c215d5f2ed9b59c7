# Check "whiteout" (sourced by tests/vm/guest.sh): image import + exec
# --image of the whiteout image (busybox, then a layer deleting /bin/yes),
# as the user and as root. Writes whiteout-WHO.{txt,err,rc}.
for who in user root; do
  w=/var/tmp/pv-$who
  ref="oci:$w/layout:busybox"
  pf $who image import "$ref" >"$out/whiteout-$who.err" 2>&1 \
    && pf $who exec --image "$ref" -- /bin/sh -c \
      'if [ -e /bin/yes ] || [ -L /bin/yes ]; then echo "yes-present"; else echo "yes-gone"; fi; test -e /bin/cat && echo cat-present' \
      >"$out/whiteout-$who.txt" 2>>"$out/whiteout-$who.err" </dev/null
  echo $? >"$out/whiteout-$who.rc"
done
