#!/usr/bin/env bash
# Benchmarks boxsync against `cp -a`, real `doveadm backup` and `mbsync` on one generated
# corpus, in one run, and prints medians, peak memory and ratios. See bench/README.md.
#
#   bench/run.sh                                   # 20,000 messages, 1 GiB, 3 repetitions
#   BENCH_MESSAGES=500 BENCH_REPEAT=1 bench/run.sh # a quick look
#
# Environment: BENCH_MESSAGES (20000), BENCH_BYTES (1 GiB per 20,000 messages, e.g. 50MiB),
# BENCH_SEED (1), BENCH_REPEAT (3), BENCH_TIMEOUT (3600 s per run), BENCH_WORK (bench/work).
# A tool that fails (boxsync, while it is young) is reported as FAILED; the run goes on.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
# shellcheck source=../scripts/lib/dovecot.sh
. "$repo/scripts/lib/dovecot.sh"

MESSAGES=${BENCH_MESSAGES:-20000}
BYTES=${BENCH_BYTES:-$(((1 << 30) * MESSAGES / 20000))}
SEED=${BENCH_SEED:-1}
REPEAT=${BENCH_REPEAT:-3}
TIMEOUT=${BENCH_TIMEOUT:-3600}
WORK=${BENCH_WORK:-$here/work}
export PYTHONDONTWRITEBYTECODE=1

# shellcheck source=lib.sh
. "$here/lib.sh"
need python3 python3 || { say "python3 is required"; exit 1; }
need /usr/bin/time time || { say "/usr/bin/time is required"; exit 1; }
have_doveadm=1
need doveadm dovecot-core dovecot-imapd || have_doveadm=
have_mbsync=1
need mbsync isync || have_mbsync=

say "building boxsync (cargo build --release)"
boxsync="$repo/target/release/boxsync"
if ! (cd "$repo" && cargo build --release >&2); then
    say "boxsync did not build; its runs will show as FAILED"
    rm -f "$boxsync"
fi

# --- corpus ----------------------------------------------------------------------------------

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
corpus_bytes=$(du -sb "$corpus" | cut -f1)

run="$WORK/run"
# Nothing is deleted while runs are timed: old copies are set aside here and removed at the end
# (see "Deletions" in bench/README.md).
trash="$WORK/trash"
mkdir -p "$trash"
if [ -e "$run" ]; then
    mv "$run" "$trash/run.$(date +%s%N)"
fi
mkdir -p "$run/logs"
# Dovecot runs as another uid when we are root; it must reach the stores.
chmod 755 "$WORK" "$run"
raw="$run/raw.tsv"
: >"$raw"

# --- measuring -------------------------------------------------------------------------------

# logname JOB TOOL REP: a file-name-safe log prefix for one run.
logname() {
    printf '%s/logs/%s' "$run" "$(printf '%s.%s.%s' "$1" "$2" "$3" | tr -c 'A-Za-z0-9.\n-' '_')"
}

# timed JOB TOOL REP COMMAND...: one measured run: flushes dirty pages first (untimed), then
# wall time and peak RSS of COMMAND, appended to $raw. Never fails.
timed() {
    local job=$1 tool=$2 rep=$3
    shift 3
    local log
    log=$(logname "$job" "$tool" "$rep")
    sync
    local t0 t1 rc=0 rss
    t0=$(date +%s%N)
    /usr/bin/time -f '%M' -o "$log.rss" timeout "$TIMEOUT" "$@" >"$log.out" 2>"$log.err" || rc=$?
    t1=$(date +%s%N)
    rss=$(tail -n 1 "$log.rss" 2>/dev/null || echo 0)
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$job" "$tool" "$rep" \
        "$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", (b - a) / 1e9 }')" \
        "$rss" "$rc" "$log" >>"$raw"
    printf '    %-24s %-14s #%s %8.3f s  exit %s\n' "$job" "$tool" "$rep" \
        "$(awk -v a="$t0" -v b="$t1" 'BEGIN { print (b - a) / 1e9 }')" "$rc" >&2
}

# failed JOB TOOL REP RC WHY: records a run that could not even start.
failed() {
    local log
    log="$(logname "$1" "$2" "$3").notrun"
    echo "$5" >"$log.err"
    printf '%s\t%s\t%s\t0\t0\t%s\t%s\n' "$1" "$2" "$3" "$4" "$log" >>"$raw"
}

# Each tool works on its own copy of the corpus: Dovecot writes its index files into the
# source, mbsync its UID map, boxsync its index. "tcp" is boxsync syncing to a boxsync
# server on loopback.
tools=(boxsync tcp)
if [ -n "$have_doveadm" ]; then tools+=(doveadm); fi
if [ -n "$have_mbsync" ]; then tools+=(mbsync); fi
for t in "${tools[@]}"; do
    mkdir -p "$run/$t"
    cp -a "$corpus" "$run/$t/src"
done
chmod 755 "$run"/*

bsrc="$run/boxsync/src" bdst="$run/boxsync/dst"
boxsync_cmd=("$boxsync" -o "mail_location=maildir:$bsrc" backup)

# boxsync over tcp: a fresh `server --listen` per measured run (its peak RSS is read from
# /proc at the end of the run and reported as "tcp server"); the user "dst" maps to
# $run/tcp/dst.
tsrc="$run/tcp/src" tdst="$run/tcp/dst"
tcp_port=$((20000 + RANDOM % 20000))
tcp_cmd=("$boxsync" -o "mail_location=maildir:$tsrc" -o doveadm_password=bench backup -u dst
    "tcp:127.0.0.1:$tcp_port")
tcp_server_pid=
tcp_server_start() {
    local root=$1
    "$boxsync" -o "mail_location=maildir:$root/%u" -o doveadm_password=bench \
        server --listen "127.0.0.1:$tcp_port" 2>"$run/logs/tcp-server.err" &
    tcp_server_pid=$!
    for _ in $(seq 100); do
        grep -q listening "$run/logs/tcp-server.err" 2>/dev/null && return 0
        sleep 0.05
    done
    say "the tcp server did not start: $(cat "$run/logs/tcp-server.err")"
}
# tcp_timed JOB REP ROOT COMMAND...: a measured client run against a fresh server.
tcp_timed() {
    local job=$1 rep=$2 root=$3
    shift 3
    tcp_server_start "$root"
    timed "$job" "boxsync tcp" "$rep" "$@"
    local hwm
    hwm=$(awk '/VmHWM/ { print $2 }' "/proc/$tcp_server_pid/status" 2>/dev/null || echo 0)
    kill "$tcp_server_pid" 2>/dev/null || true
    wait "$tcp_server_pid" 2>/dev/null || true
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$job" "tcp server" "$rep" \
        "$(tail -n 1 "$raw" | cut -f4)" "${hwm:-0}" 0 "$run/logs/tcp-server" >>"$raw"
}

if [ -n "$have_doveadm" ]; then
    dovecot_init "$run/dovecot"
    dsrc="$run/doveadm/src" ddst="$run/doveadm/dst"
    doveadm_cmd=(env USER=boxsync HOME="$DOVECOT_HOME" doveadm -c "$DOVECOT_CONF"
        -o "mail_location=maildir:$dsrc" backup)
fi

if [ -n "$have_mbsync" ]; then
    msrc="$run/mbsync/src" mdst="$run/mbsync/dst"
    # Far = the source, near = the backup; on an initial run everything flows far -> near.
    cat >"$run/mbsync/mbsyncrc" <<EOF
MaildirStore src
Inbox "$msrc/"
SubFolders Maildir++
AltMap yes

MaildirStore dst
Inbox "$mdst/"
SubFolders Maildir++
AltMap yes

Channel bench
Far :src:
Near :dst:
Patterns *
Sync All
Create Both
SyncState *
EOF
    mbsync_cmd=(mbsync -c "$run/mbsync/mbsyncrc" -q bench)
fi

say "corpus: $MESSAGES messages, $((corpus_bytes / 1048576)) MiB; $REPEAT runs each"

say "initial copies (fresh destination each run; the tool's own index removed from its source)"
for rep in $(seq "$REPEAT"); do
    # Every tool's previous destination is set aside (renamed, not deleted) before any run of
    # this round: see "Deletions" in bench/README.md.
    for d in "$run/cp/dst" "$bdst" "$tdst" "${ddst:-}" "${mdst:-}"; do
        if [ -n "$d" ] && [ -e "$d" ]; then
            mv "$d" "$trash/$(printf '%s' "${d#"$run"/}" | tr / _).$rep.$(date +%s%N)"
        fi
    done
    find "$bsrc" "$tsrc" -maxdepth 1 -name 'boxsync.index.sqlite*' -delete
    if [ -n "$have_doveadm" ]; then
        find "$dsrc" \( -name 'dovecot.index*' -o -name 'dovecot.list.index*' \) -delete
    fi
    if [ -n "$have_mbsync" ]; then
        find "$msrc" \( -name '.isyncuidmap.db' -o -name '.uidvalidity' -o -name '.mbsyncstate*' \) -delete
    fi

    mkdir -p "$run/cp"
    timed initial "cp -a + sync" "$rep" bash -c 'cp -a "$1" "$2" && sync' _ "$corpus" "$run/cp/dst"

    timed initial boxsync "$rep" "${boxsync_cmd[@]}" "maildir:$bdst"

    tcp_timed initial "$rep" "$run/tcp" "${tcp_cmd[@]}"

    if [ -n "$have_doveadm" ]; then
        dovecot_prepare "$dsrc" "$ddst"
        timed initial doveadm "$rep" "${doveadm_cmd[@]}" "maildir:$ddst"
    fi

    if [ -n "$have_mbsync" ]; then
        timed initial mbsync "$rep" "${mbsync_cmd[@]}"
    fi
done

say "reruns with no changes"
# boxsync trusts a folder's recorded mtimes only once they are 2 s old (coarse file system
# clocks); a rerun right after the initial copy rescans instead. Reruns come later in practice.
sleep 2
# The -s runs start from the state a `-s ''` run printed, then each from the previous one's.
state_of() {
    awk 'NF { last = $0 } END { print last }' "$1"
}
bstate_log="$run/logs/boxsync-state"
if "${boxsync_cmd[@]}" -s '' "maildir:$bdst" >"$bstate_log.out" 2>"$bstate_log.err"; then
    bstate=$(state_of "$bstate_log.out")
else
    bstate_rc=$?
    bstate=
fi
if [ -n "$have_doveadm" ]; then
    dovecot_prepare "$dsrc" "$ddst"
    dstate_log="$run/logs/doveadm-state"
    "${doveadm_cmd[@]}" -s '' "maildir:$ddst" >"$dstate_log.out" 2>"$dstate_log.err" || true
    dstate=$(state_of "$dstate_log.out" || true)
fi
for rep in $(seq "$REPEAT"); do
    timed "rerun, no changes" boxsync "$rep" "${boxsync_cmd[@]}" "maildir:$bdst"
    if [ -n "$bstate" ]; then
        timed "rerun, no changes" "boxsync -s" "$rep" "${boxsync_cmd[@]}" -s "$bstate" "maildir:$bdst"
        next=$(state_of "$(tail -n 1 "$raw" | cut -f7).out" || true)
        if [ -n "$next" ]; then bstate=$next; fi
    else
        failed "rerun, no changes" "boxsync -s" "$rep" "${bstate_rc:-1}" \
            "no state from boxsync backup -s '': see $bstate_log.err"
    fi
    if [ -n "$have_doveadm" ]; then
        dovecot_prepare "$dsrc" "$ddst"
        timed "rerun, no changes" doveadm "$rep" "${doveadm_cmd[@]}" "maildir:$ddst"
        if [ -n "$dstate" ]; then
            timed "rerun, no changes" "doveadm -s" "$rep" "${doveadm_cmd[@]}" -s "$dstate" "maildir:$ddst"
            next=$(state_of "$(tail -n 1 "$raw" | cut -f7).out" || true)
            if [ -n "$next" ]; then dstate=$next; fi
        else
            failed "rerun, no changes" "doveadm -s" "$rep" 1 "no state from doveadm backup -s ''"
        fi
    fi
    if [ -n "$have_mbsync" ]; then
        timed "rerun, no changes" mbsync "$rep" "${mbsync_cmd[@]}"
    fi
done

say "after 1% new messages and 1% flag changes (each run mutates every tool's source alike)"
for rep in $(seq "$REPEAT"); do
    for t in "${tools[@]}"; do
        python3 "$here/mutate.py" "$run/$t/src" --new-percent 1 --flag-percent 1 \
            --seed $((SEED * 1000 + rep)) >"$run/logs/mutate.$t.$rep" 2>&1
    done
    timed "after 1% new, 1% flags" boxsync "$rep" "${boxsync_cmd[@]}" "maildir:$bdst"
    tcp_timed "after 1% new, 1% flags" "$rep" "$run/tcp" "${tcp_cmd[@]}"
    if [ -n "$have_doveadm" ]; then
        dovecot_prepare "$dsrc" "$ddst"
        timed "after 1% new, 1% flags" doveadm "$rep" "${doveadm_cmd[@]}" "maildir:$ddst"
    fi
    if [ -n "$have_mbsync" ]; then
        timed "after 1% new, 1% flags" mbsync "$rep" "${mbsync_cmd[@]}"
    fi
done

say "one 200 MB message, locally and over tcp (memory must not grow with the message)"
big="$WORK/big-200M"
if [ ! -e "$big/complete" ]; then
    rm -rf "$big"
    python3 - "$big/Maildir" <<'PY'
import os, sys
root = sys.argv[1]
for d in ("cur", "new", "tmp"):
    os.makedirs(os.path.join(root, d), exist_ok=True)
line = (b"0123456789abcdefghijklmnopqrstuvwxyz" * 2)[:70] + b"\n"
head = b"From: big@example.org\nSubject: 200 MB\nMessage-ID: <big@bench>\n\n"
n = (200 * 1000 * 1000 - len(head)) // len(line)
with open(os.path.join(root, "cur", "1700000000.M1P1.bench:2,S"), "wb") as f:
    f.write(head)
    for i in range(n):
        f.write(line)
PY
    touch "$big/complete"
fi
for rep in $(seq "$REPEAT"); do
    rm -rf "$run/big" && mkdir -p "$run/big" && cp -a "$big/Maildir" "$run/big/src"
    timed "one 200 MB message" boxsync "$rep" "$boxsync" -o "mail_location=maildir:$run/big/src" \
        backup "maildir:$run/big/local"
    rm -f "$run/big/src"/boxsync.index.sqlite*
    tcp_timed "one 200 MB message" "$rep" "$run/big" "$boxsync" \
        -o "mail_location=maildir:$run/big/src" -o doveadm_password=bench backup -u dst \
        "tcp:127.0.0.1:$tcp_port"
done

# --- report ----------------------------------------------------------------------------------

results="$here/results-$(date +%Y-%m-%d-%H%M%S).txt"
{
    echo "boxsync benchmark, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "machine: $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr)"
    echo "boxsync: $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$repo" diff --quiet 2>/dev/null || echo ' (modified)')"
    if [ -n "$have_doveadm" ]; then echo "dovecot: $(dovecot --version 2>/dev/null || echo '?') (default settings)"; fi
    if [ -n "$have_mbsync" ]; then echo "mbsync: $(mbsync --version 2>/dev/null || echo '?')"; fi
    echo "corpus: $MESSAGES messages, $((corpus_bytes / 1048576)) MiB, seed $SEED ($corpus)"
    echo "runs: $REPEAT per job, median wall time; peak RSS by /usr/bin/time"
    echo
    python3 "$here/report.py" "$raw"
} | tee "$results"
say "results written to $results; logs in $run/logs"
say "removing the copies set aside (after every measurement)"
rm -rf "$trash"
