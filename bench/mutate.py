#!/usr/bin/env python3
"""Changes a Maildir the way a day of mail does: new deliveries and flag changes.

New messages go to new/ through tmp/, with Dovecot-style names and no uidlist entry, as an
MDA delivers them. Flag changes rename files in cur/ (or move them from new/ to cur/), as a
mail client's IMAP server does. Percentages are of the messages present before the run.

    python3 bench/mutate.py DIR --new-percent 1 --flag-percent 1 --seed 7

Deterministic: the same store and seed give the same changes. Messages are chosen by their
base name (the part before ":2,"), which Dovecot keeps when it moves a file from new/ to cur/,
so two copies of a store that different tools have synced get the same changes.
Standard library only.
"""

import argparse
import os
import random
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the repository
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import corpus  # noqa: E402  (the message generator; same directory)


def folders(root):
    """Maildir++ folder directories under root, the root (INBOX) first."""
    out = [root]
    for entry in sorted(os.listdir(root)):
        path = os.path.join(root, entry)
        if entry.startswith(".") and entry not in (".", "..") and os.path.isdir(os.path.join(path, "cur")):
            out.append(path)
    return out


def messages(root):
    """Every message as (folder dir, subdir, file name), sorted by (folder, base name)."""
    found = []
    for folder in folders(root):
        for sub in ("cur", "new"):
            d = os.path.join(folder, sub)
            if not os.path.isdir(d):
                continue
            for name in os.listdir(d):
                if name.startswith("."):
                    continue
                found.append((os.path.relpath(folder, root), name.split(":2,")[0], sub, name))
    found.sort()
    return [(os.path.join(root, f), sub, name) for f, _, sub, name in found]


def keyword_letters(folder):
    """The keyword letters a dovecot-keywords file in folder defines."""
    try:
        with open(os.path.join(folder, "dovecot-keywords"), encoding="utf-8") as fh:
            idx = [int(line.split(" ", 1)[0]) for line in fh if line.strip()]
    except (OSError, ValueError):
        return []
    return [chr(ord("a") + i) for i in idx if i < 26]


def change_flags(rng, folder, sub, name):
    """Toggles \\Seen, \\Flagged, or a keyword of one message; returns the new path."""
    base, _, flags = name.partition(":2,")
    f = set(flags)
    letters = keyword_letters(folder)
    r = rng.random()
    if r < 0.5:
        f ^= {"S"}
    elif r < 0.8 or not letters:
        f ^= {"F"}
    else:
        f ^= {letters[0]}
    new_name = base + ":2," + "".join(sorted(f))
    src = os.path.join(folder, sub, name)
    dst = os.path.join(folder, "cur", new_name)
    os.rename(src, dst)
    return dst


def deliver(rng, pool, folder, serial, received):
    """Delivers one new message into folder/new via folder/tmp, as an MDA does."""
    size = min(200_000, max(900, int(rng.lognormvariate(8.3, 0.8))))
    data = corpus.make_message(rng, pool, size, received, False, serial)
    vsize = len(data) + data.count(b"\n")
    base = corpus.maildir_name(received, rng.randrange(1_000_000), rng.randint(1000, 65000),
                               len(data), vsize)
    tmp = os.path.join(folder, "tmp", base)
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.utime(tmp, (received, received))
    os.makedirs(os.path.join(folder, "new"), exist_ok=True)
    os.rename(tmp, os.path.join(folder, "new", base))


def latest_time(msgs):
    """The newest received time in the store (from file names), so deliveries come after it."""
    best = corpus.TIME_END
    for _, _, name in msgs:
        try:
            best = max(best, int(name.split(".", 1)[0]))
        except ValueError:
            pass
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", help="Maildir++ root")
    ap.add_argument("--new-percent", type=float, default=1.0)
    ap.add_argument("--flag-percent", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    root = args.dir
    if not os.path.isdir(os.path.join(root, "cur")):
        sys.exit("mutate.py: %s is not a Maildir (no cur/)" % root)

    rng = random.Random(args.seed)
    pool = corpus.TextPool(random.Random(args.seed ^ 0x5EED))
    msgs = messages(root)
    n_flag = min(len(msgs), round(len(msgs) * args.flag_percent / 100))
    n_new = round(len(msgs) * args.new_percent / 100)

    for folder, sub, name in rng.sample(msgs, n_flag):
        change_flags(rng, folder, sub, name)

    fdirs = folders(root)
    # Mail mostly lands in INBOX; list mail in the list folders.
    weights = [8 if f == root else (2 if ".Lists" in os.path.basename(f) else 0.1) for f in fdirs]
    now = latest_time(msgs) + 60
    for i in range(n_new):
        folder = rng.choices(fdirs, weights=weights)[0]
        deliver(rng, pool, folder, 10_000_000 + args.seed * 100_000 + i, now + 37 * i)
    print("mutate.py: %d messages: %d new, %d flag changes (seed %d)"
          % (len(msgs), n_new, n_flag, args.seed))


if __name__ == "__main__":
    main()
