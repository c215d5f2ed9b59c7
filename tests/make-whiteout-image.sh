#!/usr/bin/env bash
# Builds the whiteout image with umoci in DIR/layout and prints its
# reference, oci:DIR/layout:wh: busybox plus /t, then layers that delete and
# replace files and directories, for tests/image.rs and the VM matrix, which
# compare the tree inside `pinfold exec --image` with `umoci unpack`.
#   tests/make-whiteout-image.sh DIR
# Layer 2 (umoci repack): deletes a file (/bin/yes, /t/a/f1) and a directory
# (/t/d); deletes /t/o and re-creates it with other contents; replaces a
# file by a directory (/t/f), a directory by a file (/t/e) and by a symlink
# (/t/g), a symlink by a directory (/t/s); changes a mode (/t/a/f2); deletes
# /t/r. Layer 3 (umoci repack): re-creates /t/r. Layer 4 (written here, added
# with umoci raw add-layer): /t/q opaque (.wh..wh..opq) with a whiteout inside
# it, and .wh.w with a new /t/w in the same layer.
set -euo pipefail
# Before each repack every entry gets an old time, so a directory changed
# for the next layer always differs from it (umoci compares times to the
# second). umoci still leaves out the entry of a directory whose only
# change is a deleted file (/bin, /t/a): such a layer only implies the
# directory, which pinfold creates 0755 (/t/a stays 0755 here for that).
old_times() { find "$r" -exec touch -h -d @946684800 {} +; }
dir=${1:?usage: tests/make-whiteout-image.sh DIR}
command -v umoci >/dev/null || { echo "umoci is missing: apt-get install umoci (tests/setup.sh)" >&2; exit 1; }
l="$dir/layout"; b="$dir/bundle"; r="$b/rootfs"
umoci init --layout "$l"
umoci new --image "$l:wh"
umoci unpack --rootless --image "$l:wh" "$b" >/dev/null
bash "$(dirname "$0")/make-busybox-rootfs.sh" "$r"
mkdir -p "$r/t/a" "$r/t/d/sub" "$r/t/o/sub" "$r/t/e/deep" "$r/t/g" "$r/t/r" "$r/t/q/sub" "$r/t/w/sub"
echo 1 >"$r/t/a/f1"; echo 2 >"$r/t/a/f2"; echo keep >"$r/t/a/keep"
echo x >"$r/t/d/sub/x"; echo y >"$r/t/d/y"
echo old >"$r/t/o/old"; echo old3 >"$r/t/o/sub/old3"
echo f >"$r/t/f"; echo e >"$r/t/e/deep/e"; echo g >"$r/t/g/g"; ln -s a "$r/t/s"
echo r >"$r/t/r/old"; echo q >"$r/t/q/old"; echo q2 >"$r/t/q/sub/old"
echo w >"$r/t/w/old"; echo w2 >"$r/t/w/sub/old"
chmod 0600 "$r/t/a/keep"
old_times
umoci repack --refresh-bundle --image "$l:wh" "$b" >/dev/null
rm "$r/bin/yes" "$r/t/a/f1"
rm -r "$r/t/d"
rm -r "$r/t/o"; mkdir "$r/t/o"; echo new >"$r/t/o/new"
rm "$r/t/f"; mkdir "$r/t/f"; echo in >"$r/t/f/in"
rm -r "$r/t/e"; echo now-a-file >"$r/t/e"
rm -r "$r/t/g"; ln -s a "$r/t/g"
rm "$r/t/s"; mkdir "$r/t/s"; echo s >"$r/t/s/s"
rm -r "$r/t/r"
chmod 0700 "$r/t/a/f2"
old_times
umoci repack --refresh-bundle --image "$l:wh" "$b" >/dev/null
mkdir "$r/t/r"; echo again >"$r/t/r/again"
umoci repack --image "$l:wh" "$b" >/dev/null
python3 - "$dir/layer4.tar" <<'PY'
import io, sys, tarfile
with tarfile.open(sys.argv[1], "w", format=tarfile.PAX_FORMAT) as t:
    for name, data in [("t/", None), ("t/q/", None), ("t/q/.wh..wh..opq", b""),
                       ("t/q/.wh.old", b""), ("t/q/new", b"q-new\n"),
                       ("t/.wh.w", b""), ("t/w/", None), ("t/w/fresh", b"w-fresh\n")]:
        ti = tarfile.TarInfo(name.rstrip("/"))
        ti.type = tarfile.DIRTYPE if data is None else tarfile.REGTYPE
        ti.mode = 0o755 if data is None else 0o644
        ti.size = len(data or b"")
        t.addfile(ti, io.BytesIO(data) if data else None)
PY
umoci raw add-layer --image "$l:wh" "$dir/layer4.tar" >/dev/null
rm -rf "$b" "$dir/layer4.tar"
echo "oci:$l:wh"
