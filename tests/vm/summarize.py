#!/usr/bin/env python3
"""Turns one guest's raw results (tests/vm/guest.sh wrote them into OUT_DIR)
into OUT_DIR/result.json and one table row on stdout.

    summarize.py KERNEL OUT_DIR BOOT_STATUS

BOOT_STATUS is what the host saw: "ok", "timeout" or "qemu-exit-N". Exits 0
when the row is green (or a documented refusal), 1 when not.
Every value comes from a file the guest wrote; a missing file is a failure.
"""
import json
import os
import re
import sys

import tree  # tests/vm/tree.py

# The one line a policy prints when it refuses to start on this kernel (a
# floor of its [kernel] table): a documented outcome, not a failure.
REFUSAL = re.compile(r"Landlock ABI \d+, below the policy's kernel\.landlock_abi = \d+|lacks [^(]+\([^)]+\), which the policy requires")


def read(out, name):
    try:
        with open(os.path.join(out, name), encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def probes(out, policy, who):
    """{"holes": [...], "refused_line": str|None, "ok": bool, "text": cell}"""
    txt, err, rc = (read(out, f"probes-{policy}-{who}{s}") for s in (".txt", ".err", ".rc"))
    if txt is None or rc is None:
        return {"ok": False, "text": "no result"}
    if "PROBES-DONE" in txt:
        holes = [l.split(":")[0] for l in txt.splitlines() if l.endswith(": ALLOWED")]
        # What the policy runs without here, from doctor (as exec decides it).
        doc = json.loads(read(out, f"doctor-{who}.json") or "null") or []
        line = next((c["detail"] for c in doc if c["name"] == f"policy {policy}"), "")
        deg = re.findall(r"(?:^runs degraded: |; )(\w+) \(needs", line)
        text = "0 holes" if not holes else f"{len(holes)} HOLES: {' '.join(holes)}"
        return {"holes": holes, "ok": not holes, "degraded": deg,
                "text": f"{text} (degraded: {', '.join(deg)})" if deg else text}
    lines = [l for l in (err or "").splitlines() if l.strip()]
    refusal = [l for l in lines if REFUSAL.search(l)]
    first = (refusal or lines or [f"exit {rc.strip()}"])[0]
    documented = rc.strip() != "0" and bool(refusal)
    return {"refused_line": first, "ok": documented,
            "text": f"refused: {REFUSAL.search(first).group(0)}" if documented else f"FAILED: {first[:90]}"}


def whiteout_cell(out, who):
    """"match", or the first paths where the tree inside exec --image differs
    from umoci's unpack of the same image (tests/vm/tree.py), or why there
    is no listing. run.sh names umoci's tree in PINFOLD_VM_WHITEOUT_ROOTFS."""
    t = read(out, f"whiteout-{who}.txt")
    rc = (read(out, f"whiteout-{who}.rc") or "?").strip()
    rootfs = os.environ.get("PINFOLD_VM_WHITEOUT_ROOTFS")
    if t is not None and rc == "0" and rootfs:
        return tree.compare(t, rootfs)[1]
    err = (read(out, f"whiteout-{who}.err") or "").strip().splitlines()
    return f"FAILED rc={rc}: {err[-1][:60] if err else ''}"


def main():
    kernel, out, boot = sys.argv[1:4]
    r = {"kernel": kernel, "boot": boot}
    done = read(out, "done") is not None
    r["release"] = (read(out, "uname") or "?").strip()
    fs = (read(out, "cgroup-fs") or "").strip()
    r["cgroup_fs"] = fs
    hier = {"cgroup2fs": "v2 unified", "tmpfs": "v1/hybrid"}.get(fs, fs or "?")
    ll = "?"
    try:
        doc = json.loads(read(out, "doctor-user.json") or "null") or []
        d = next(c for c in doc if c["name"] == "landlock")
        m = re.search(r"ABI (\d+)", d["detail"])
        ll = m.group(1) if m else d["detail"][:40]
        r["doctor_user"] = doc
    except (ValueError, StopIteration, KeyError, TypeError):
        pass
    r["landlock_abi"] = ll
    mech = {}
    for who in ("user", "root"):
        try:
            rep = json.loads(read(out, f"report-{who}.json") or "null")
            mech[who] = rep["limits_mechanism"]
            # Why a delegated cgroup was not used, when pinfold says (the
            # errno text after the last colon of its set-up error).
            m = re.search(r"cgroup set-up failed: .*: ([^:()]+) \(os error", rep.get("limits_detail") or "")
            if m:
                mech[who] += f" (cgroup set-up failed: {m.group(1)})"
        except (ValueError, KeyError, TypeError):
            mech[who] = "?"
    r["limits_mechanism"] = mech
    cells, ok = {}, done and boot == "ok" and fs == "cgroup2fs"
    for pol in ("default", "untrusted"):
        per = {who: probes(out, pol, who) for who in ("user", "root")}
        r[f"probes_{pol}"] = per
        ok = ok and all(p["ok"] for p in per.values())
        u, s = per["user"]["text"], per["root"]["text"]
        cells[pol] = u if u == s else f"user {u} / root {s}"
    wo = {}
    for who in ("user", "root"):
        wo[who] = whiteout_cell(out, who)
    r["whiteout"] = wo
    ok = ok and all(v == "match" for v in wo.values())
    wcell = wo["user"] if wo["user"] == wo["root"] else f"user {wo['user']} / root {wo['root']}"
    r["green"] = ok
    with open(os.path.join(out, "result.json"), "w", encoding="utf-8") as f:
        json.dump(r, f, indent=2)
    if not done:
        why = "timed out" if boot == "timeout" else f"did not finish (boot {boot})"
        print(f"| {kernel} | {r['release']} | FAILED: guest {why}; see {out}/console.log | | | | | FAIL |")
        return 1
    print(f"| {kernel} | {r['release']} | {hier}; limits user={mech['user']} root={mech['root']} "
          f"| {ll} | {cells['default']} | {cells['untrusted']} | {wcell} | {'ok' if ok else 'FAIL'} |")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
