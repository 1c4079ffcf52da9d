#!/usr/bin/env python3
"""Generates the benchmark corpus: a Dovecot-style Maildir++ store, deterministic from a seed.

The store is what Dovecot itself would have on disk for a mailbox it has served for a while:
Maildir++ folders named in modified UTF-7, Dovecot-style file names
(<secs>.M<usecs>P<pid>.<host>,S=<size>,W=<vsize>:2,<flags>) in cur/, a dovecot-uidlist (v3)
per folder so every message has a UID (with the gaps that expunges leave), a dovecot-keywords
file per folder, a subscriptions file, and received dates as file mtimes. Most messages are
short text; some carry base64 attachments; a few are several megabytes.

    python3 bench/corpus.py --out bench/work/Maildir --messages 20000 --bytes 1GiB --seed 1

Same arguments, same bytes: the random generator is seeded and nothing depends on the clock,
the host or the directory listing order. Standard library only.
"""

import argparse
import base64
import math
import os
import random
import sys

GIB = 1 << 30
MIB = 1 << 20

# (mailbox name with "/" separator, share of the messages)
FOLDERS = [
    ("INBOX", 26),
    ("Sent", 12),
    ("Drafts", 1),
    ("Trash", 3),
    ("Junk", 3),
    ("Archive", 6),
    ("Archive/2022", 6),
    ("Archive/2023", 7),
    ("Archive/2024", 8),
    ("Work", 5),
    ("Work/Projékt", 3),
    ("Work/Prøjekt", 2),
    ("Work/Clients", 3),
    ("Lists", 2),
    ("Lists/dovecot", 5),
    ("Lists/rust-users", 4),
    ("Family", 1),
    ("Family/Größe Reise", 1),
    ("Receipts", 1),
    ("Notes/日本語", 1),
]

# Keyword table of every folder; letter a is index 0 (Dovecot's dovecot-keywords).
KEYWORDS = ["$Important", "$Forwarded", "$Junk", "$NotJunk", "$Label1", "todo"]

HOST = "mail"

WORDS = (
    "the of and to in is that for it as with was on be by at this are from or have an they "
    "which one you had not but what all were when we there can more if out so said up its "
    "about into than them could only other new some time very then also after first two "
    "mailbox message server backup restore sync folder index storage disk network release "
    "meeting report budget project review draft schedule invoice payment customer team "
    "update please thanks regards question answer issue ticket deploy test build version "
    "config setting user account password login quota archive attachment calendar travel "
    "hotel flight lunch dinner weekend holiday family photo garden weather train station"
).split()

FIRST = "Alice Bob Carol Dave Erin Frank Grace Heidi Ivan Judy Mallory Niaj Olivia Peggy Rupert " \
    "Sybil Trent Victor Walter Zoë Jörg Søren Éloïse".split()
LAST = "Martin Keller Nguyen Smith Jones Müller Dahl Okafor Rossi Tanaka Novak Silva".split()
DOMAINS = "example.org example.net example.com lists.example.org corp.example".split()
ZONES = ["+0000", "+0100", "+0200", "-0500", "-0800", "+0900", "+0530"]
DAYS = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"]
MONTHS = "Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split()

# Received dates spread over 2021-01-01 .. 2024-12-31 (UTC).
TIME_START = 1609459200
TIME_END = 1735689599


def parse_size(text):
    """'1GiB', '500M', '20000000' -> bytes (K/M/G and KiB/MiB/GiB are all powers of 1024)."""
    t = text.strip().lower().rstrip("b").rstrip("i")
    mult = 1
    if t and t[-1] in "kmg":
        mult = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[t[-1]]
        t = t[:-1]
    return int(float(t) * mult)


def mutf7(name):
    """One hierarchy level of a mailbox name in IMAP modified UTF-7 (RFC 3501 5.1.3)."""
    out = []
    pending = []

    def flush():
        if pending:
            raw = "".join(pending).encode("utf-16-be")
            b64 = base64.b64encode(raw).decode("ascii").rstrip("=").replace("/", ",")
            out.append("&" + b64 + "-")
            pending.clear()

    for ch in name:
        if 0x20 <= ord(ch) <= 0x7E:
            flush()
            out.append("&-" if ch == "&" else ch)
        else:
            pending.append(ch)
    flush()
    return "".join(out)


def folder_dir(root, name):
    """The Maildir++ directory of mailbox `name` (INBOX is the root itself)."""
    if name == "INBOX":
        return root
    return os.path.join(root, "." + ".".join(mutf7(p) for p in name.split("/")))


def rfc5322_date(secs, zone):
    """secs (UTC) as an RFC 5322 date in the given +hhmm zone."""
    sign = 1 if zone[0] == "+" else -1
    local = secs + sign * (int(zone[1:3]) * 3600 + int(zone[3:5]) * 60)
    days, rem = divmod(local, 86400)
    y, m, d = civil_from_days(days)
    return "%s, %02d %s %d %02d:%02d:%02d %s" % (
        DAYS[days % 7], d, MONTHS[m - 1], y, rem // 3600, rem % 3600 // 60, rem % 60, zone)


def civil_from_days(z):
    """Days since 1970-01-01 -> (year, month, day), proleptic Gregorian."""
    z += 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (1 if m <= 2 else 0), m, d


class TextPool:
    """A few hundred KB of word salad, sliced at line boundaries for message bodies."""

    def __init__(self, rng, size=512 * 1024):
        lines = []
        total = 0
        while total < size:
            words = []
            length = 0
            width = rng.randint(50, 74)
            while length < width:
                w = rng.choice(WORDS)
                words.append(w)
                length += len(w) + 1
            line = " ".join(words)
            if rng.random() < 0.08:
                line += "."
                lines.append(line[0].upper() + line[1:])
                lines.append("")
                total += len(line) + 2
            else:
                lines.append(line)
                total += len(line) + 1
        self.text = ("\n".join(lines) + "\n").encode("ascii")

    def take(self, rng, n):
        """About n bytes of whole lines (at least one line)."""
        n = max(1, n)
        out = []
        while n > 0:
            start = self.text.find(b"\n", rng.randrange(len(self.text))) + 1
            if start >= len(self.text):
                start = 0
            chunk = self.text[start:start + n]
            cut = chunk.rfind(b"\n")
            if cut < 0:  # n is shorter than this line: take the whole line
                chunk = self.text[start:self.text.index(b"\n", start) + 1]
            else:
                chunk = chunk[:cut + 1]
            out.append(chunk)
            n -= len(chunk)
        return b"".join(out)


def person(rng):
    first = rng.choice(FIRST)
    last = rng.choice(LAST)
    local = (first + "." + last).lower().encode("ascii", "ignore").decode()
    return first, last, "%s@%s" % (local or "user", rng.choice(DOMAINS))


def encode_header_value(text):
    """Non-ASCII header text as an RFC 2047 encoded-word; ASCII as is."""
    try:
        text.encode("ascii")
        return text
    except UnicodeEncodeError:
        return "=?UTF-8?B?%s?=" % base64.b64encode(text.encode("utf-8")).decode("ascii")


def make_message(rng, pool, size, received, attachment, serial):
    """A realistic message of about `size` bytes (LF line ends), received at `received`."""
    first, last, addr = person(rng)
    zone = rng.choice(ZONES)
    sent = received - rng.randint(2, 900)
    subject = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 7))).capitalize()
    if rng.random() < 0.3:
        subject = "Re: " + subject
    msgid = "<%016x.%d@%s>" % (rng.getrandbits(64), serial, rng.choice(DOMAINS))
    headers = [
        "Return-Path: <%s>" % addr,
        "Delivered-To: dana@example.com",
        "Received: from mx%d.%s (mx%d.%s [192.0.2.%d])\n\tby mail.example.com with ESMTPS id %012X\n"
        "\tfor <dana@example.com>; %s" % (
            rng.randint(1, 4), rng.choice(DOMAINS), rng.randint(1, 4), rng.choice(DOMAINS),
            rng.randint(1, 254), rng.getrandbits(48), rfc5322_date(received, "+0000")),
        "From: %s <%s>" % (encode_header_value(first + " " + last), addr),
        "To: Dana Example <dana@example.com>",
        "Subject: %s" % subject,
        "Date: %s" % rfc5322_date(sent, zone),
        "Message-ID: %s" % msgid,
        "MIME-Version: 1.0",
    ]
    if not attachment:
        headers += ["Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: 8bit"]
        head = ("\n".join(headers) + "\n\n").encode("ascii")
        body = pool.take(rng, size - len(head))
        return head + body
    boundary = "=_%024x" % rng.getrandbits(96)
    headers.append('Content-Type: multipart/mixed; boundary="%s"' % boundary)
    head = ("\n".join(headers) + "\n\nThis is a multi-part message in MIME format.\n").encode("ascii")
    text = pool.take(rng, rng.randint(300, 3000))
    fname = "%s-%d.%s" % (rng.choice(["report", "scan", "photo", "slides", "data"]), serial,
                          rng.choice(["pdf", "jpg", "zip", "bin"]))
    part1 = ("--%s\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
             % boundary).encode("ascii") + text
    part2_head = ("\n--%s\nContent-Type: application/octet-stream; name=\"%s\"\n"
                  "Content-Transfer-Encoding: base64\n"
                  "Content-Disposition: attachment; filename=\"%s\"\n\n"
                  % (boundary, fname, fname)).encode("ascii")
    tail = ("\n--%s--\n" % boundary).encode("ascii")
    room = size - len(head) - len(part1) - len(part2_head) - len(tail)
    raw_len = max(57, room * 57 // 77)  # 76 base64 chars + LF per 57 raw bytes
    encoded = base64.encodebytes(rng.randbytes(raw_len)).rstrip(b"\n")
    return head + part1 + part2_head + encoded + tail


def flags_for(rng, folder, kw_letters):
    """Maildir flag letters (sorted, as Dovecot writes them) typical for the folder."""
    f = set()
    if folder == "Sent":
        f.add("S")
    elif folder == "Drafts":
        f.update("DS")
    elif folder == "INBOX":
        if rng.random() < 0.80:
            f.add("S")
        if rng.random() < 0.12:
            f.add("R")
        if rng.random() < 0.04:
            f.add("F")
    else:
        if rng.random() < 0.95:
            f.add("S")
        if rng.random() < 0.05:
            f.add("R")
        if rng.random() < 0.02:
            f.add("F")
    if folder == "Trash" and rng.random() < 0.02:
        f.add("T")
    if folder == "Junk":
        f.add("c")  # $Junk
    elif rng.random() < 0.08:
        for _ in range(rng.randint(1, 2)):
            f.add(rng.choice(kw_letters))
    return "".join(sorted(f))


def maildir_name(secs, usecs, pid, size, vsize):
    return "%d.M%dP%d.%s,S=%d,W=%d" % (secs, usecs, pid, HOST, size, vsize)


def make_folder_dirs(path, is_inbox):
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(path, sub), exist_ok=True)
    if not is_inbox:
        open(os.path.join(path, "maildirfolder"), "wb").close()


def plan_sizes(rng, n, total, big_count):
    """Per-message (size, has_attachment) hitting about `total` bytes; the first
    `big_count` entries are the multi-megabyte ones."""
    scale = min(1.0, total / GIB)
    bigs = [int(rng.uniform(8, 20) * MIB * scale) for _ in range(big_count)]
    if sum(bigs) > total * 0.3:
        f = total * 0.3 / sum(bigs)
        bigs = [int(b * f) for b in bigs]
    rest = n - big_count
    kinds = [rng.random() < 0.12 for _ in range(rest)]
    text_sizes = [min(300_000, max(900, int(rng.lognormvariate(math.log(4000), 0.9))))
                  if not k else 0 for k in kinds]
    att_weights = [min(6 * MIB, max(5000, rng.lognormvariate(math.log(120_000), 1.1)))
                   if k else 0 for k in kinds]
    budget = total - sum(bigs) - sum(text_sizes)
    if att_weights and sum(att_weights) and budget > 0:
        f = budget / sum(att_weights)
        sizes = [t if not k else max(4000, int(w * f))
                 for k, t, w in zip(kinds, text_sizes, att_weights)]
    else:
        # Too few bytes for attachments: shrink everything proportionally.
        f = max(total - sum(bigs), rest * 900) / max(1, sum(text_sizes) + sum(att_weights))
        sizes = [max(900, int((t or w) * f)) for t, w in zip(text_sizes, att_weights)]
    return [(b, True) for b in bigs] + list(zip(sizes, kinds))


def generate(out, n, total, seed, big_count, quiet=False):
    rng = random.Random(seed)
    pool = TextPool(random.Random(seed ^ 0x5EED))
    if os.path.exists(out) and os.listdir(out):
        sys.exit("corpus.py: %s exists and is not empty" % out)
    os.makedirs(out, exist_ok=True)

    big_count = min(big_count, n // 20)
    plan = plan_sizes(rng, n, total, big_count)
    rng.shuffle(plan)
    names = [f for f, _ in FOLDERS]
    weights = [w for _, w in FOLDERS]
    assignment = rng.choices(range(len(FOLDERS)), weights=weights, k=n)
    kw_letters = [chr(ord("a") + i) for i in range(len(KEYWORDS))]

    per_folder = {i: [] for i in range(len(FOLDERS))}
    for (size, att), fi in zip(plan, assignment):
        per_folder[fi].append((size, att))

    written = 0
    bytes_written = 0
    used_names = set()
    serial = 0
    next_report = 0.1
    for fi, name in enumerate(names):
        path = folder_dir(out, name)
        make_folder_dirs(path, name == "INBOX")
        msgs = per_folder[fi]
        times = sorted(rng.randint(TIME_START, TIME_END) for _ in msgs)
        uid = 0
        records = []
        for (size, att), received in zip(msgs, times):
            serial += 1
            uid += 1
            if rng.random() < 0.05:
                uid += rng.randint(1, 5)  # expunged before the snapshot
            data = make_message(rng, pool, size, received, att, serial)
            vsize = len(data) + data.count(b"\n")
            while True:
                base = maildir_name(received, rng.randrange(1_000_000), rng.randint(1000, 65000),
                                    len(data), vsize)
                if base not in used_names:
                    used_names.add(base)
                    break
            flags = flags_for(rng, name, kw_letters)
            file = os.path.join(path, "cur", base + ":2," + flags)
            with open(file, "wb") as fh:
                fh.write(data)
            os.utime(file, (received, received))
            records.append("%d :%s\n" % (uid, base))
            written += 1
            bytes_written += len(data)
            if not quiet and written >= next_report * n:
                print("corpus.py: %3d%% %d messages, %.0f MiB"
                      % (round(100 * written / n), written, bytes_written / MIB), file=sys.stderr)
                next_report += 0.1
        uidvalidity = 1600000000 + fi * 7 + rng.randint(0, 6)
        guid = "%032x" % rng.getrandbits(128)
        with open(os.path.join(path, "dovecot-uidlist"), "w", encoding="ascii") as fh:
            fh.write("3 V%d N%d G%s\n" % (uidvalidity, uid + 1, guid))
            fh.writelines(records)
        with open(os.path.join(path, "dovecot-keywords"), "w", encoding="utf-8") as fh:
            fh.writelines("%d %s\n" % (i, k) for i, k in enumerate(KEYWORDS))
    with open(os.path.join(out, "subscriptions"), "w", encoding="ascii") as fh:
        fh.write("V\t2\n\n")
        for name in names:
            fh.write("\t".join(mutf7(p) for p in name.split("/")) + "\n")
    return written, bytes_written


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="Maildir root to create (must be absent or empty)")
    ap.add_argument("--messages", type=int, default=20000, help="number of messages (20000)")
    ap.add_argument("--bytes", default="1GiB", help="total size, e.g. 1GiB, 50MiB (1GiB)")
    ap.add_argument("--seed", type=int, default=1, help="random seed (1)")
    ap.add_argument("--big", type=int, default=5,
                    help="multi-megabyte messages, 8-20 MiB at 1 GiB, scaled with --bytes (5)")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()
    if args.messages < 1:
        sys.exit("corpus.py: --messages must be at least 1")
    n, b = generate(args.out, args.messages, parse_size(args.bytes), args.seed, args.big,
                    args.quiet)
    print("corpus.py: wrote %d messages, %.1f MiB, %d folders into %s"
          % (n, b / MIB, len(FOLDERS), args.out))


if __name__ == "__main__":
    main()
