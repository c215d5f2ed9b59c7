#!/usr/bin/env python3
"""Compares the tree seen inside `pinfold exec --image` (the output of
tests/vm/list-tree.sh) with the same image unpacked by `umoci unpack` on the
host, file by file: path, type, mode, size, content hash, symlink target.

    tree.py LISTING ROOTFS

prints "match" (exit 0) or the first differing paths (exit 1). Used by
tests/image.rs and, as a module (compare), by tests/vm/summarize.py.
Paths pinfold itself mounts or writes (/proc, /dev, /sys, /tmp and the
generated /etc files) are left out on both sides.
"""
import hashlib
import os
import stat
import sys

# Mount points and files of the container, not of the image (/workspace:
# the default working directory, made when the image has none).
OWN = {"proc", "dev", "sys", "tmp", "etc/hostname", "etc/hosts", "etc/resolv.conf", "workspace"}
TYPES = {"regular file": "f", "regular empty file": "f", "directory": "d", "symbolic link": "l",
         "fifo": "p", "character special file": "c", "block special file": "b", "socket": "s"}


def own(path):
    return any(path == o or path.startswith(o + "/") for o in OWN)


def parse_listing(text):
    """{path: (type, mode, size, sha256 or target)} from list-tree.sh's output;
    None when it did not finish (no END line)."""
    entries, hashes, done = {}, {}, False
    for line in text.splitlines():
        if line == "END":
            done = True
        elif line.startswith("S|"):
            _, kind, mode, size, rest = line.split("|", 4)
            name, _, quoted = rest.partition("|")
            path = name[2:] if name.startswith("./") else name
            t = TYPES.get(kind, kind)
            target = None
            if t == "l":
                target = quoted.split("' -> '", 1)[1][:-1] if "' -> '" in quoted else "?"
            entries[path] = [t, None if t == "l" else int(mode, 8), int(size), target]
        elif line.startswith("H|"):
            digest, _, name = line[2:].partition("  ")
            hashes[name[2:] if name.startswith("./") else name] = digest
    if not done:
        return None
    out = {}
    for p, (t, mode, size, target) in entries.items():
        if t == "d":
            size = None  # a directory's size is the file system's business
        out[p] = (t, mode, size, hashes.get(p) if t == "f" else target)
    return {p: v for p, v in out.items() if not own(p)}


def host_tree(root):
    """The same records for a directory on the host, never following symlinks."""
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            full = os.path.join(d, n)
            path = os.path.relpath(full, root)
            st = os.lstat(full)
            m = st.st_mode
            if stat.S_ISLNK(m):
                rec = ("l", None, st.st_size, os.readlink(full))
            elif stat.S_ISDIR(m):
                rec = ("d", stat.S_IMODE(m), None, None)
            elif stat.S_ISREG(m):
                with open(full, "rb") as f:
                    rec = ("f", stat.S_IMODE(m), st.st_size, hashlib.sha256(f.read()).hexdigest())
            else:
                kind = "p" if stat.S_ISFIFO(m) else "c" if stat.S_ISCHR(m) else "o"
                rec = (kind, stat.S_IMODE(m), st.st_size, None)
            out[path] = rec
    return {p: v for p, v in out.items() if not own(p)}


def describe(rec):
    if rec is None:
        return "absent"
    t, mode, size, extra = rec
    s = {"f": "file", "d": "dir", "l": "symlink"}.get(t, t)
    if mode is not None:
        s += f" {mode:o}"
    if size is not None and t != "l":
        s += f" {size}B"
    if t == "l":
        s += f" -> {extra}"
    elif t == "f":
        s += f" {extra[:8] if extra else '?'}"
    return s


def compare(listing_text, rootfs, limit=4):
    """(True, "match") or (False, "first differing paths: ...")."""
    inside = parse_listing(listing_text)
    if inside is None:
        return False, "the listing inside the container did not finish"
    host = host_tree(rootfs)
    diffs = [p for p in sorted(set(inside) | set(host)) if inside.get(p) != host.get(p)]
    if not diffs:
        return True, "match"
    shown = "; ".join(f"/{p}: inside {describe(inside.get(p))}, umoci {describe(host.get(p))}"
                      for p in diffs[:limit])
    more = f" (+{len(diffs) - limit} more)" if len(diffs) > limit else ""
    return False, f"MISMATCH {len(diffs)} paths: {shown}{more}"


def main():
    listing, rootfs = sys.argv[1:3]
    with open(listing, encoding="utf-8", errors="replace") as f:
        ok, text = compare(f.read(), rootfs)
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
