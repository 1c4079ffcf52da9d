#!/usr/bin/env bash
# Format conversions (issue 5): Maildir -> mbox and mbox -> Maildir against `cp -a` + sync of
# the same data in its Maildir form (the corpus: 20,000 files), and Dovecot's mdbox -> Maildir
# against `doveadm backup` doing the same, on the corpus of bench/run.sh, in one run; prints
# medians, peak memory and ratios.
#
#   bench/formats.sh                                    # 20,000 messages, 1 GiB, 3 runs
#   BENCH_MESSAGES=500 BENCH_REPEAT=1 bench/formats.sh  # a quick look
#
# An mbox folder is a file, so it cannot also hold sub-folders: the corpus's nested folders
# with mail in their parents (Archive and Archive/2022) are flattened for every tool alike
# (.Archive.2022 becomes .Archive-2022) before anything is measured.
# Environment: as bench/run.sh (BENCH_MESSAGES, BENCH_BYTES, BENCH_SEED, BENCH_REPEAT,
# BENCH_TIMEOUT, BENCH_WORK).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
# shellcheck source=../scripts/lib/dovecot.sh
. "$repo/scripts/lib/dovecot.sh"
# shellcheck source=lib.sh
. "$here/lib.sh"

MESSAGES=${BENCH_MESSAGES:-20000}
BYTES=${BENCH_BYTES:-$(((1 << 30) * MESSAGES / 20000))}
SEED=${BENCH_SEED:-1}
REPEAT=${BENCH_REPEAT:-3}
TIMEOUT=${BENCH_TIMEOUT:-3600}
WORK=${BENCH_WORK:-$here/work}
export PYTHONDONTWRITEBYTECODE=1

need python3 python3 || { say "python3 is required"; exit 1; }
need /usr/bin/time time || { say "/usr/bin/time is required"; exit 1; }
have_doveadm=1
need doveadm dovecot-core dovecot-imapd || have_doveadm=

say "building boxsync (cargo build --release)"
boxsync="$repo/target/release/boxsync"
(cd "$repo" && cargo build --release >&2)

corpus_dir="$WORK/corpus-m$MESSAGES-b$BYTES-s$SEED"
corpus="$corpus_dir/Maildir"
mkdir -p "$WORK"
if [ ! -e "$corpus_dir/complete" ]; then
    say "generating the corpus into $corpus_dir"
    rm -rf "$corpus_dir"
    mkdir -p "$corpus_dir"
    python3 "$here/corpus.py" --out "$corpus" --messages "$MESSAGES" --bytes "$BYTES" \
        --seed "$SEED" >&2
    touch "$corpus_dir/complete"
fi

run="$WORK/formats-run"
rm -rf "$run"
mkdir -p "$run/logs"
chmod 755 "$WORK" "$run"
raw="$run/raw.tsv"
: >"$raw"

# The flat corpus: Maildir++ folder .A.B becomes .A-B.
flat="$run/flat"
cp -a "$corpus" "$flat"
find "$flat" -maxdepth 1 -name 'boxsync.index.sqlite*' -delete
for d in "$flat"/.*.*; do
    [ -d "$d" ] || continue
    name=${d##*/}
    mv "$d" "$flat/.$(printf '%s' "${name#.}" | tr . -)"
done
: >"$flat/subscriptions"
flat_bytes=$(du -sb "$flat" | cut -f1)

timed() {
    local job=$1 tool=$2 rep=$3
    shift 3
    local log
    log="$run/logs/$(printf '%s.%s.%s' "$job" "$tool" "$rep" | tr -c 'A-Za-z0-9.\n-' '_')"
    sync
    local t0 t1 rc=0 rss
    t0=$(date +%s%N)
    /usr/bin/time -f '%M' -o "$log.rss" timeout "$TIMEOUT" "$@" >"$log.out" 2>"$log.err" || rc=$?
    t1=$(date +%s%N)
    rss=$(tail -n 1 "$log.rss" 2>/dev/null || echo 0)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$job" "$tool" "$rep" \
        "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", (b - a) / 1e9 }')" \
        "$rss" "$rc" "$log" >>"$raw"
    printf '    %-20s %-14s #%s %8.3f s  exit %s\n' "$job" "$tool" "$rep" \
        "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print (b - a) / 1e9 }')" "$rc" >&2
}

if [ -n "$have_doveadm" ]; then
    dovecot_init "$run/dovecot"
    dove() { env USER=boxsync HOME="$DOVECOT_HOME" doveadm -c "$DOVECOT_CONF" "$@"; }
fi

say "flat corpus: $((flat_bytes / 1048576)) MiB; $REPEAT runs each"

say "Maildir -> mbox"
src="$run/m2b/src"
mkdir -p "$run/m2b" && cp -a "$flat" "$src"
for rep in $(seq "$REPEAT"); do
    rm -rf "$run/cp"
    timed "Maildir -> mbox" "cp -a + sync" "$rep" bash -c 'cp -a "$1" "$2" && sync' _ "$src" "$run/cp"
    rm -rf "$run/m2b/dst"
    find "$src" -maxdepth 1 -name 'boxsync.index.sqlite*' -delete
    timed "Maildir -> mbox" boxsync "$rep" "$boxsync" -o "mail_location=maildir:$src" \
        backup "mbox:$run/m2b/dst"
done

say "mbox -> Maildir (the mbox boxsync wrote, its index removed before each run)"
# The floor is the same data copied in its Maildir form (what must be written: 20,000 files);
# copying the mbox tree itself (a few large files) is shown beside it.
mbox="$run/m2b/dst"
for rep in $(seq "$REPEAT"); do
    rm -rf "$run/cp"
    timed "mbox -> Maildir" "cp -a + sync" "$rep" bash -c 'cp -a "$1" "$2" && sync' _ "$src" "$run/cp"
    rm -rf "$run/cp"
    timed "mbox -> Maildir" "cp mbox tree" "$rep" bash -c 'cp -a "$1" "$2" && sync' _ "$mbox" "$run/cp"
    rm -rf "$run/b2m" "$mbox/.imap"
    timed "mbox -> Maildir" boxsync "$rep" "$boxsync" -o "mail_location=mbox:$mbox" \
        backup "maildir:$run/b2m"
done

if [ -n "$have_doveadm" ]; then
    say "mdbox -> Maildir (an mdbox doveadm made from the flat corpus)"
    mdbox="$run/mdbox"
    dovecot_prepare "$flat" "$mdbox"
    dove -o "mail_location=maildir:$flat" backup "mdbox:$mdbox" >&2
    dovecot_prepare "$mdbox"
    for rep in $(seq "$REPEAT"); do
        rm -rf "$run/d2m-dove"
        dovecot_prepare "$mdbox" "$run/d2m-dove"
        timed "mdbox -> Maildir" doveadm "$rep" env USER=boxsync HOME="$DOVECOT_HOME" \
            doveadm -c "$DOVECOT_CONF" -o "mail_location=mdbox:$mdbox" backup "maildir:$run/d2m-dove"
        rm -rf "$run/d2m" "$run/d2m-index"
        timed "mdbox -> Maildir" boxsync "$rep" "$boxsync" \
            -o "mail_location=mdbox:$mdbox:INDEX=$run/d2m-index" backup "maildir:$run/d2m"
    done
fi

results="$here/results-formats-$(date +%Y-%m-%d-%H%M%S).txt"
{
    echo "boxsync format conversions, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "machine: $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr)"
    echo "boxsync: $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$repo" diff --quiet 2>/dev/null || echo ' (modified)')"
    if [ -n "$have_doveadm" ]; then echo "dovecot: $(dovecot --version 2>/dev/null || echo '?')"; fi
    echo "corpus: $MESSAGES messages, $((flat_bytes / 1048576)) MiB, seed $SEED, flattened"
    echo "runs: $REPEAT per job, median wall time; peak RSS by /usr/bin/time"
    echo
    python3 "$here/report.py" "$raw"
} | tee "$results"
say "results written to $results; logs in $run/logs"
