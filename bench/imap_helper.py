#!/usr/bin/env python3
"""Helpers for bench/imap.sh (the IMAP migration benchmark). Standard library only.

    imap_helper.py freeport                       a TCP port on 127.0.0.1 that was free just now
    imap_helper.py bigmsg MAILDIR_FOLDER SIZE SEED
                                                  adds one SIZE-byte message (a base64 attachment)
                                                  to the folder's cur/, Dovecot-style name, \\Seen
    imap_helper.py manifest MAILDIR OUT.json [--deep]
                                                  what a Maildir++ store holds, per mailbox
    imap_helper.py check MANIFEST.json DEST [--layout maildir++|verbatim] [--deep] [--no-keywords]
                                                  compares DEST with the manifest; prints one
                                                  line, exit 1 when DEST is incomplete or wrong
    imap_helper.py report RAW.tsv                 the table, ratios and targets

Folders are compared by their decoded (UTF-8, "/"-separated) names. `--layout maildir++` is
Dovecot's and boxsync's layout (ROOT is INBOX, ROOT/.A.B is A/B, names in modified UTF-7);
`verbatim` is mbsync's `SubFolders Verbatim` (ROOT/INBOX, ROOT/A/B). With --deep, every message
is compared by content (CRLF read as LF, since IMAP hands out CRLF and stores may keep LF), and
by system flags and keywords; without it, by count only. In `verbatim` (mbsync 1.4), the X-TUID
header mbsync adds and the P flag it makes of $Forwarded are ignored, and it has no keywords.
"""

import base64
import hashlib
import json
import os
import random
import socket
import statistics
import sys

MIB = 1 << 20


# --- freeport / bigmsg -------------------------------------------------------------------------

def freeport():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    print(port)


def bigmsg(folder, size, seed):
    rng = random.Random(seed)
    boundary = "=_big%020x" % rng.getrandbits(80)
    head = (
        "Return-Path: <carol.keller@example.net>\n"
        "Delivered-To: dana@example.com\n"
        "From: Carol Keller <carol.keller@example.net>\n"
        "To: Dana Example <dana@example.com>\n"
        "Subject: The scans, all of them (%d MB)\n"
        "Date: Tue, 12 Nov 2024 09:14:07 +0100\n"
        "Message-ID: <big-%d@bench.example.net>\n"
        "MIME-Version: 1.0\n"
        "Content-Type: multipart/mixed; boundary=\"%s\"\n\n"
        "This is a multi-part message in MIME format.\n"
        "--%s\nContent-Type: text/plain; charset=utf-8\n\nHere they are.\n"
        "--%s\nContent-Type: application/zip; name=\"scans.zip\"\n"
        "Content-Transfer-Encoding: base64\n"
        "Content-Disposition: attachment; filename=\"scans.zip\"\n\n"
        % (size // 1_000_000, seed, boundary, boundary, boundary)).encode("ascii")
    tail = ("\n--%s--\n" % boundary).encode("ascii")
    room = size - len(head) - len(tail)
    raw = rng.randbytes(room * 57 // 77 + 57)
    enc = base64.encodebytes(raw)[:room].rstrip(b"\n")
    data = head + enc + tail
    data += b"\n" * (size - len(data))  # exact size
    vsize = len(data) + data.count(b"\n")
    received = 1731399247
    name = "%d.M%dP%d.mail,S=%d,W=%d:2,S" % (received, 424242, 4242, len(data), vsize)
    path = os.path.join(folder, "cur", name)
    with open(path, "wb") as fh:
        fh.write(data)
    os.utime(path, (received, received))
    print(path)


# --- manifests ---------------------------------------------------------------------------------

def mutf7_decode(s):
    out = []
    i = 0
    while i < len(s):
        c = s[i]
        if c != "&":
            out.append(c)
            i += 1
            continue
        j = s.index("-", i)
        chunk = s[i + 1:j]
        if not chunk:
            out.append("&")
        else:
            b64 = chunk.replace(",", "/")
            b64 += "=" * (-len(b64) % 4)
            out.append(base64.b64decode(b64).decode("utf-16-be"))
        i = j + 1
    return "".join(out)


def folders(root, layout):
    """[(decoded name, directory)] of every mailbox directory (one with cur/) under root."""
    found = []
    if layout == "maildir++":
        if os.path.isdir(os.path.join(root, "cur")):
            found.append(("INBOX", root))
        for e in sorted(os.listdir(root)):
            p = os.path.join(root, e)
            if e.startswith(".") and e not in (".", "..") and os.path.isdir(os.path.join(p, "cur")):
                found.append(("/".join(mutf7_decode(x) for x in e[1:].split(".")), p))
    else:
        for d, subdirs, _ in os.walk(root):
            subdirs.sort()
            if "cur" in subdirs:
                rel = os.path.relpath(d, root)
                found.append(("INBOX" if rel in (".", "INBOX") else
                              "/".join(mutf7_decode(x) for x in rel.split(os.sep)), d))
    return found


def keyword_table(folder):
    table = {}
    try:
        with open(os.path.join(folder, "dovecot-keywords"), encoding="utf-8") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) == 2 and parts[0].isdigit() and int(parts[0]) < 26:
                    table[chr(ord("a") + int(parts[0]))] = parts[1]
    except FileNotFoundError:
        pass
    return table


def messages(folder, deep, strip_tuid=False):
    """[(size as stored, digest or None, system flags, keywords)] of one mailbox."""
    kw = keyword_table(folder) if deep else {}
    out = []
    for sub in ("cur", "new"):
        d = os.path.join(folder, sub)
        try:
            names = os.listdir(d)
        except FileNotFoundError:
            continue
        for n in names:
            p = os.path.join(d, n)
            if not os.path.isfile(p) or n.startswith("."):
                continue
            size = os.path.getsize(p)
            digest = None
            if deep:
                with open(p, "rb") as fh:
                    data = fh.read().replace(b"\r\n", b"\n")
                if strip_tuid:
                    # mbsync adds an X-TUID header to what it stores; not the source's bytes.
                    end = data.find(b"\n\n")
                    head = data[:end + 1] if end >= 0 else data
                    at = head.find(b"\nX-TUID: ")
                    if head.startswith(b"X-TUID: "):
                        at = -1
                        data = data[data.index(b"\n") + 1:]
                    elif at >= 0:
                        data = data[:at + 1] + data[data.index(b"\n", at + 1) + 1:]
                digest = hashlib.sha1(data).hexdigest()
            info = n.split(":2,", 1)[1] if ":2," in n else ""
            sysf = "".join(sorted(c for c in info if c.isupper() and not (strip_tuid and c == "P")))
            kws = ",".join(sorted(kw.get(c, c) for c in info if c.islower()))
            out.append((size, digest, sysf, kws))
    return out


def manifest(root, layout, deep):
    return {name: messages(d, deep, layout == "verbatim") for name, d in folders(root, layout)}


def cmd_manifest(root, out, deep):
    m = manifest(root, "maildir++", deep)
    with open(out, "w", encoding="utf-8") as fh:
        json.dump({"deep": deep, "folders": m}, fh)
    n = sum(len(v) for v in m.values())
    b = sum(s for v in m.values() for s, *_ in v)
    print("%d messages, %.1f MiB, %d mailboxes" % (n, b / MIB, len(m)))


def cmd_check(man_path, dest, layout, deep, keywords):
    with open(man_path, encoding="utf-8") as fh:
        src = json.load(fh)["folders"]
    if not os.path.isdir(dest):
        print("BAD: %s does not exist" % dest)
        return 1
    dst = manifest(dest, layout, deep)
    problems = []
    notes = []
    n_src = sum(len(v) for v in src.values())
    n_dst = sum(len(v) for v in dst.values())
    for name in sorted(set(src) | set(dst)):
        a = src.get(name, [])
        b = dst.get(name, [])
        if name not in dst:
            if a:
                problems.append("%s: missing (%d messages)" % (name, len(a)))
            else:
                notes.append("%s: empty mailbox not created" % name)
            continue
        if name not in src:
            if b:
                problems.append("%s: not in the source (%d messages)" % (name, len(b)))
            else:
                notes.append("%s: an empty mailbox not in the source" % name)
            continue
        if len(a) != len(b):
            problems.append("%s: %d of %d messages" % (name, len(b), len(a)))
            continue
        if deep:
            ca = sorted(x[1] for x in a)
            cb = sorted(x[1] for x in b)
            if ca != cb:
                diff = len(set(ca) ^ set(cb))
                problems.append("%s: %d messages differ in content" % (name, diff))
                continue
            fa = sorted((x[1], x[2]) for x in a)
            fb = sorted((x[1], x[2]) for x in b)
            if fa != fb:
                notes.append("%s: system flags differ on %d messages"
                             % (name, sum(1 for x, y in zip(fa, fb) if x != y)))
            if keywords:
                ka = sorted((x[1], x[3]) for x in a)
                kb = sorted((x[1], x[3]) for x in b)
                if ka != kb:
                    notes.append("%s: keywords differ on %d messages"
                                 % (name, sum(1 for x, y in zip(ka, kb) if x != y)))
    what = "content, flags%s compared" % (", keywords" if keywords else "") if deep else "counted"
    line = "%d/%d messages in %d/%d mailboxes (%s)" % (
        n_dst, n_src, len(dst), len(src), what)
    if problems:
        print("BAD: " + line + "; " + "; ".join(problems[:6])
              + ("; ..." if len(problems) > 6 else "")
              + ("" if not notes else "; notes: " + "; ".join(notes[:4])))
        return 1
    print("ok: " + line + ("" if not notes else "; notes: " + "; ".join(notes[:6])))
    return 0


# --- report ------------------------------------------------------------------------------------

ORDER = [
    ("migration", "cp -a + sync"),
    ("migration", "boxsync"),
    ("migration", "doveadm"),
    ("migration", "mbsync"),
    ("rerun, no changes", "boxsync"),
    ("rerun, no changes", "doveadm"),
    ("rerun, no changes", "mbsync"),
]


def cmd_report(path):
    runs = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            p = line.rstrip("\n").split("\t")
            if len(p) < 8:
                continue
            job, tool, rep, secs, rss, rc, log, check = p[:8]
            runs.setdefault((job, tool), []).append({
                "rep": rep, "secs": float(secs), "rss": int(rss) if rss.isdigit() else 0,
                "rc": int(rc), "log": log, "check": check})
    summ = {}
    keys = [k for k in ORDER if k in runs] + sorted(k for k in runs if k not in ORDER)
    print("%-18s %-13s %9s %8s %8s %8s  %s" % (
        "job", "tool", "median s", "min s", "max s", "peak MiB", "status"))
    print("-" * 100)
    for key in keys:
        reps = runs[key]
        bad = [r for r in reps if r["rc"] != 0 or r["check"].startswith("BAD")]
        secs = [r["secs"] for r in reps]
        s = {"secs": statistics.median(secs), "rss": max(r["rss"] for r in reps) / 1024,
             "ok": not bad}
        summ[key] = s
        if bad:
            r = bad[0]
            status = "FAILED in %d/%d runs: exit %d, %s (%s.err)" % (
                len(bad), len(reps), r["rc"], r["check"], r["log"])
        else:
            # The first run's check is the thorough one (content compared).
            check = reps[0]["check"]
            status = "ok (%d runs)%s" % (len(reps), "" if check == "-" else "; " + check[4:])
        print("%-18s %-13s %9.3f %8.3f %8.3f %8.1f  %s" % (
            key[0], key[1], s["secs"], min(secs), max(secs), s["rss"], status))
    print()
    print("ratios of median wall times, and targets")

    def ratio(label, job, num, den, target=None, at_least=True):
        a, b = summ.get((job, num)), summ.get((job, den))
        if not a or not b:
            return
        if not a["ok"] or not b["ok"]:
            print("  %-34s n/a (%s failed)" % (label, num if not a["ok"] else den))
            return
        r = a["secs"] / b["secs"] if b["secs"] > 0 else float("inf")
        verdict = ""
        if target is not None:
            met = r >= target if at_least else r <= target
            verdict = "   target %s %g: %s" % (">=" if at_least else "<=", target,
                                               "met" if met else "MISSED")
        print("  %-34s %8.2f%s" % (label, r, verdict))

    ratio("migration: doveadm / boxsync", "migration", "doveadm", "boxsync", 2)
    ratio("migration: mbsync / boxsync", "migration", "mbsync", "boxsync", 2)
    ratio("migration: boxsync / cp -a + sync", "migration", "boxsync", "cp -a + sync")
    ratio("rerun: boxsync / mbsync", "rerun, no changes", "boxsync", "mbsync", 2, False)
    ratio("rerun: boxsync / doveadm", "rerun, no changes", "boxsync", "doveadm")
    peak = max((s["rss"] for (job, tool), s in summ.items() if tool == "boxsync"), default=None)
    if peak is not None:
        print("  %-34s %8.1f MiB   target < 128 MiB: %s" % (
            "boxsync peak RSS (all runs)", peak, "met" if peak < 128 else "MISSED"))


def main():
    a = sys.argv[1:]
    if not a:
        sys.exit(__doc__)
    cmd, rest = a[0], a[1:]
    flags = {x for x in rest if x.startswith("--") and x != "--layout"}
    pos = [x for x in rest if not x.startswith("--")]
    layout = "maildir++"
    if "--layout" in rest:
        layout = rest[rest.index("--layout") + 1]
        pos.remove(layout)
    if cmd == "freeport":
        freeport()
    elif cmd == "bigmsg" and len(pos) == 3:
        bigmsg(pos[0], int(pos[1]), int(pos[2]))
    elif cmd == "manifest" and len(pos) == 2:
        cmd_manifest(pos[0], pos[1], "--deep" in flags)
    elif cmd == "check" and len(pos) == 2:
        sys.exit(cmd_check(pos[0], pos[1], layout, "--deep" in flags,
                           "--no-keywords" not in flags))
    elif cmd == "report" and len(pos) == 1:
        cmd_report(pos[0])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
