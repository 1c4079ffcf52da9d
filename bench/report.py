#!/usr/bin/env python3
"""Summarizes bench/run.sh's raw measurements: medians per job and tool, and ratios.

    python3 bench/report.py RAW.tsv

RAW.tsv lines: job, tool, repetition, wall seconds, peak RSS KiB, exit status, log prefix
(tab-separated). A job/tool with any non-zero exit status is reported as FAILED with the
first failing log. Standard library only.
"""

import statistics
import sys

# (job, tool) in the order the table shows them.
ORDER = [
    ("initial", "cp -a + sync"),
    ("initial", "boxsync"),
    ("initial", "doveadm"),
    ("initial", "mbsync"),
    ("initial", "boxsync tcp"),
    ("initial", "tcp server"),
    ("rerun, no changes", "boxsync"),
    ("rerun, no changes", "boxsync -s"),
    ("rerun, no changes", "doveadm"),
    ("rerun, no changes", "doveadm -s"),
    ("rerun, no changes", "mbsync"),
    ("after 1% new, 1% flags", "boxsync"),
    ("after 1% new, 1% flags", "doveadm"),
    ("after 1% new, 1% flags", "mbsync"),
    ("after 1% new, 1% flags", "boxsync tcp"),
    ("after 1% new, 1% flags", "tcp server"),
    ("one 200 MB message", "boxsync"),
    ("one 200 MB message", "boxsync tcp"),
    ("one 200 MB message", "tcp server"),
]

# (label, job, numerator tool, denominator tool)
RATIOS = [
    ("initial: boxsync / cp", "initial", "boxsync", "cp -a + sync"),
    ("initial: doveadm / cp", "initial", "doveadm", "cp -a + sync"),
    ("initial: doveadm / boxsync", "initial", "doveadm", "boxsync"),
    ("initial: mbsync / boxsync", "initial", "mbsync", "boxsync"),
    ("rerun: doveadm / boxsync", "rerun, no changes", "doveadm", "boxsync"),
    ("rerun: doveadm -s / boxsync -s", "rerun, no changes", "doveadm -s", "boxsync -s"),
    ("rerun: mbsync / boxsync", "rerun, no changes", "mbsync", "boxsync"),
    ("rerun: boxsync / boxsync -s", "rerun, no changes", "boxsync", "boxsync -s"),
    ("1%/1%: doveadm / boxsync", "after 1% new, 1% flags", "doveadm", "boxsync"),
    ("1%/1%: mbsync / boxsync", "after 1% new, 1% flags", "mbsync", "boxsync"),
    ("initial: boxsync tcp / boxsync", "initial", "boxsync tcp", "boxsync"),
    ("1%/1%: boxsync tcp / boxsync", "after 1% new, 1% flags", "boxsync tcp", "boxsync"),
    ("Maildir -> mbox: boxsync / cp", "Maildir -> mbox", "boxsync", "cp -a + sync"),
    ("mbox -> Maildir: boxsync / cp", "mbox -> Maildir", "boxsync", "cp -a + sync"),
    ("mdbox -> Maildir: doveadm / boxsync", "mdbox -> Maildir", "doveadm", "boxsync"),
]


def load(path):
    runs = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            parts = line.rstrip("\n").split("\t")
            if len(parts) < 7:
                continue
            job, tool, rep, secs, rss, rc, log = parts[:7]
            runs.setdefault((job, tool), []).append(
                {"rep": rep, "secs": float(secs), "rss": int(rss) if rss.isdigit() else 0,
                 "rc": int(rc), "log": log})
    return runs


def summarize(runs):
    out = {}
    for key, reps in runs.items():
        failed = [r for r in reps if r["rc"] != 0]
        out[key] = {
            "n": len(reps),
            "secs": statistics.median(r["secs"] for r in reps),
            "rss_mib": statistics.median(r["rss"] for r in reps) / 1024,
            "failed": failed,
        }
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: report.py RAW.tsv")
    summary = summarize(load(sys.argv[1]))
    keys = [k for k in ORDER if k in summary] + sorted(k for k in summary if k not in ORDER)

    print("%-24s %-14s %10s %10s  %s" % ("job", "tool", "median s", "RSS MiB", "status"))
    print("-" * 78)
    for job, tool in keys:
        s = summary[(job, tool)]
        if s["failed"]:
            f = s["failed"][0]
            status = "FAILED (exit %d in %d/%d runs; %s.err)" % (
                f["rc"], len(s["failed"]), s["n"], f["log"])
            print("%-24s %-14s %10s %10s  %s" % (job, tool, "-", "-", status))
        else:
            print("%-24s %-14s %10.3f %10.1f  ok (%d runs)"
                  % (job, tool, s["secs"], s["rss_mib"], s["n"]))

    print()
    print("ratios of median wall times (> 1: the first is slower)")
    for label, job, num, den in RATIOS:
        a = summary.get((job, num))
        b = summary.get((job, den))
        if not a or not b:
            continue
        if a["failed"] or b["failed"]:
            print("  %-32s n/a (%s FAILED)" % (label, num if a["failed"] else den))
        elif b["secs"] <= 0:
            print("  %-32s n/a" % label)
        else:
            print("  %-32s %8.2f" % (label, a["secs"] / b["secs"]))


if __name__ == "__main__":
    main()
