# Run by busybox sh inside `pinfold exec --image` (tests/image.rs, guest.sh):
# lists the image's tree for tests/vm/tree.py, which compares it with the
# same image unpacked by umoci on the host. One "S|type|mode|size|path|%N"
# line per entry, one "H|sha256  path" line per regular file, then END.
# -xdev: the container's own mounts (/proc, /dev, /tmp ...) are not the image.
cd / || exit 1
find . -xdev ! -path . -exec stat -c 'S|%F|%a|%s|%n|%N' {} + || exit 1
find . -xdev -type f -exec sha256sum {} + | sed 's/^/H|/' || exit 1
echo END
