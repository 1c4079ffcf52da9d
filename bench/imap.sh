#!/usr/bin/env bash
# IMAP migration benchmark: boxsync's imapc against `doveadm backup -R imapc:` and `mbsync`, all
# pulling the same account from one loopback Dovecot imapd into a fresh Maildir, with `cp -a` of
# the served Maildir as a floor; then a no-change rerun of each. Prints medians, peak RSS,
# ratios against the targets, and the exact commands. See bench/README.md.
#
#   bench/imap.sh               # bench/run.sh's corpus (20,000 messages, 1 GiB) + one 20 MB
#                               # message, 3 runs each
#   SMALL=1 bench/imap.sh       # 2,000 messages (~100 MiB) + the 20 MB message: a quick check
#   RUNS=1 SMALL=1 bench/imap.sh
#
# Environment: RUNS (3), SMALL (unset), BENCH_MESSAGES (20000, 2000 with SMALL=1), BENCH_BYTES
# (1 GiB per 20,000 messages), BENCH_SEED (1), BIG_BYTES (20000000; 0 for none), BENCH_TIMEOUT
# (1800 s per run), BENCH_WORK (bench/work; the corpus cache is shared with run.sh).
# A tool that fails or leaves an incomplete Maildir is reported as FAILED; the run goes on.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")

if [ -n "${SMALL:-}" ] && [ "${SMALL:-0}" != 0 ]; then
    MESSAGES=${BENCH_MESSAGES:-2000}
else
    MESSAGES=${BENCH_MESSAGES:-20000}
fi
BYTES=${BENCH_BYTES:-$(((1 << 30) * MESSAGES / 20000))}
SEED=${BENCH_SEED:-1}
RUNS=${RUNS:-${BENCH_REPEAT:-3}}
BIG_BYTES=${BIG_BYTES:-20000000}
TIMEOUT=${BENCH_TIMEOUT:-1800}
WORK=${BENCH_WORK:-$here/work}
MAIL_ID=5000 # the uid/gid Dovecot accesses mail as when we are root
export PYTHONDONTWRITEBYTECODE=1
helper="$here/imap_helper.py"

# shellcheck source=lib.sh
. "$here/lib.sh"
need python3 python3 || { say "python3 is required"; exit 1; }
need /usr/bin/time time || { say "/usr/bin/time is required"; exit 1; }
need dovecot dovecot-core dovecot-imapd || { say "dovecot is required (the IMAP server)"; exit 1; }
need doveadm dovecot-core || { say "doveadm is required"; exit 1; }
# dovecot-core alone has no imap binary; the imapd needs dovecot-imapd.
if [ ! -x /usr/lib/dovecot/imap ]; then
    need /usr/lib/dovecot/imap dovecot-imapd || { say "dovecot-imapd is required"; exit 1; }
fi
have_mbsync=1
need mbsync isync || have_mbsync=

say "building boxsync (cargo build --release -p boxsync)"
boxsync="$repo/target/release/boxsync"
if ! (cd "$repo" && cargo build --release -p boxsync >&2); then
    say "boxsync did not build; its runs will show as FAILED"
    rm -f "$boxsync"
fi

# --- corpus (bench/run.sh's, cached in the same place) ---------------------------------------

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

run="$WORK/imap-run"
server="$run/server"
home="$server/home/alice"
src="$home/Maildir"
dovecot_pid=
stop_dovecot() {
    if [ -n "$dovecot_pid" ]; then
        # Its own process group (setsid): the master and every process it started.
        kill -TERM -- "-$dovecot_pid" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$dovecot_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL -- "-$dovecot_pid" 2>/dev/null || true
        wait "$dovecot_pid" 2>/dev/null || true
        dovecot_pid=
    fi
}
trap stop_dovecot EXIT
trap 'exit 130' INT TERM

rm -rf "$run"
mkdir -p "$run/logs" "$server"/{run,state,log,home}
# Dovecot runs mail processes as another uid when we are root; it must reach the stores.
chmod 755 "$WORK" "$run" "$server"

if [ "$(id -u)" -eq 0 ]; then
    uid=$MAIL_ID gid=$MAIL_ID internal=dovecot login=dovenull
else
    uid=$(id -u) gid=$(id -g) internal=$(id -nu) login=$(id -nu)
fi
own() {
    if [ "$(id -u)" -eq 0 ]; then chown -R "$uid:$gid" "$@"; fi
}

say "copying the corpus into alice's home"
mkdir -p "$home"
cp -a "$corpus" "$src"
if [ "$BIG_BYTES" -gt 0 ]; then
    big=$(python3 "$helper" bigmsg "$src/.Archive" "$BIG_BYTES" "$SEED")
    say "added one $BIG_BYTES-byte message: $big"
fi
own "$home" "$server/home"

port=$(python3 "$helper" freeport)
conf="$server/dovecot.conf"
cat >"$conf" <<CONF
# Written by bench/imap.sh: a self-contained Dovecot on loopback, default settings otherwise
# (mail_fsync = optimized).
base_dir = $server/run
state_dir = $server/state
log_path = $server/log/dovecot.log
protocols = imap
listen = 127.0.0.1
default_internal_user = $internal
default_login_user = $login
first_valid_uid = 1
first_valid_gid = 1
mail_uid = $uid
mail_gid = $gid
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
mail_max_userip_connections = 100
login_trusted_networks = 127.0.0.0/8
auth_failure_delay = 0
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $server/users
}
userdb {
  driver = passwd-file
  args = username_format=%u $server/users
}
mail_location = maildir:~/Maildir
namespace inbox {
  inbox = yes
  separator = /
  prefix =
  mailbox Drafts {
    special_use = \\Drafts
  }
  mailbox Sent {
    special_use = \\Sent
  }
  mailbox Trash {
    special_use = \\Trash
  }
  mailbox Junk {
    special_use = \\Junk
  }
}
service imap-login {
  inet_listener imap {
    address = 127.0.0.1
    port = $port
  }
  inet_listener imaps {
    port = 0
  }
}
service pop3-login {
  inet_listener pop3 {
    port = 0
  }
  inet_listener pop3s {
    port = 0
  }
}
service submission-login {
  inet_listener submission {
    port = 0
  }
}
service managesieve-login {
  inet_listener sieve {
    port = 0
  }
}
CONF
echo "alice:{PLAIN}pass:$uid:$gid::$home::" >"$server/users"
own "$server/run" "$server/state" "$server/log"

# doveadm mail commands without -u take the user from USER and chdir to HOME.
dv=(env USER=alice HOME="$home" doveadm -c "$conf")

say "indexing the served Maildir once, before any timing: doveadm mailbox status … '*'"
"${dv[@]}" -o "mail_location=maildir:$src" mailbox status 'messages vsize' '*' \
    >"$run/logs/index.out" 2>"$run/logs/index.err" || {
    say "doveadm mailbox status failed: $(cat "$run/logs/index.err")"
    exit 1
}
served_msgs=$(awk '{ for (i = 1; i <= NF; i++) if ($i ~ /^messages=/) { sub("messages=", "", $i); n += $i } } END { print n + 0 }' "$run/logs/index.out")

say "recording what the source holds (content digests, flags, keywords)"
manifest="$run/source.json"
src_summary=$(python3 "$helper" manifest "$src" "$manifest" --deep)
own "$home"

say "starting Dovecot imapd on 127.0.0.1:$port"
setsid dovecot -F -c "$conf" </dev/null >"$server/log/master.out" 2>&1 &
dovecot_pid=$!
for _ in $(seq 200); do
    if python3 - "$port" <<'PY' 2>/dev/null; then break; fi
import socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
s.settimeout(5)
sys.exit(0 if s.recv(100).startswith(b"* OK") else 1)
PY
    if ! kill -0 "$dovecot_pid" 2>/dev/null; then
        say "dovecot did not start: $(cat "$server/log/master.out" "$server/log/dovecot.log" 2>/dev/null)"
        exit 1
    fi
    sleep 0.05
done

# --- the commands ----------------------------------------------------------------------------

bdst="$run/boxsync/dst" bidx="$run/boxsync/idx"
boxsync_cmd=("$boxsync" -o "mail_location=maildir:$bdst" -o imapc_host=127.0.0.1
    -o "imapc_port=$port" -o imapc_user=alice -o imapc_password=pass backup -R "imapc:$bidx")

# doveadm runs as the mail uid: its destination's parent must be that uid's.
ddst="$run/doveadm/dst"
doveadm_cmd=("${dv[@]}" -o "mail_location=maildir:$ddst" -o imapc_host=127.0.0.1
    -o "imapc_port=$port" -o imapc_user=alice -o imapc_password=pass backup -R imapc:)

mdst="$run/mbsync/dst"
mbsyncrc="$run/mbsync/mbsyncrc"
mkdir -p "$run/boxsync" "$run/doveadm" "$run/mbsync" "$run/cp"
cat >"$mbsyncrc" <<EOF
IMAPAccount alice
Host 127.0.0.1
Port $port
User alice
Pass pass
SSLType None
AuthMechs PLAIN LOGIN

IMAPStore alice
Account alice

MaildirStore local
Path $mdst/
Inbox $mdst/INBOX
SubFolders Verbatim

Channel migrate
Far :alice:
Near :local:
Patterns *
Create Near
Sync Pull
SyncState *
EOF
mbsync_cmd=(mbsync -c "$mbsyncrc" -q migrate)

cdst="$run/cp/dst"
cp_cmd=(bash -c 'cp -a "$1" "$2" && sync' _ "$src" "$cdst")

# --- measuring -------------------------------------------------------------------------------

raw="$run/raw.tsv"
: >"$raw"

logname() {
    printf '%s/logs/%s' "$run" "$(printf '%s.%s.%s' "$1" "$2" "$3" | tr -c 'A-Za-z0-9.\n-' '_')"
}

# timed JOB TOOL REP CHECK COMMAND...: one measured run (dirty pages flushed first, untimed):
# wall time and peak RSS (GNU time's "Maximum resident set size", %M) of COMMAND, then CHECK
# (untimed; a shell command whose one-line output is recorded, "BAD…" marks a failure),
# appended to $raw. Never fails.
timed() {
    local job=$1 tool=$2 rep=$3 check=$4
    shift 4
    local log
    log=$(logname "$job" "$tool" "$rep")
    sync
    local t0 t1 rc=0 rss verdict=-
    t0=$(date +%s%N)
    /usr/bin/time -f '%M' -o "$log.rss" timeout "$TIMEOUT" "$@" >"$log.out" 2>"$log.err" || rc=$?
    t1=$(date +%s%N)
    rss=$(tail -n 1 "$log.rss" 2>/dev/null || echo 0)
    if [ -n "$check" ]; then
        verdict=$(bash -c "$check" 2>&1 | tail -n 1 || true)
        verdict=${verdict//$'\t'/ }
    fi
    local secs
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.4f", (b - a) / 1e9 }')
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$job" "$tool" "$rep" "$secs" "$rss" "$rc" "$log" \
        "${verdict:--}" >>"$raw"
    printf '    %-18s %-13s #%s %8.3f s %7.1f MiB exit %s  %s\n' "$job" "$tool" "$rep" "$secs" \
        "$(awk -v k="${rss:-0}" 'BEGIN { print k / 1024 }')" "$rc" "${verdict:--}" >&2
    if [ -s "$log.err" ] && { [ "$tool" = boxsync ] || [ "$rc" -ne 0 ]; }; then
        printf '      stderr (%s lines): %s\n' "$(wc -l <"$log.err")" "$(head -c 300 "$log.err" | head -n 2 | tr '\n' ' ')" >&2
    fi
}

# check_cmd DEST LAYOUT DEEP: the verification command for one destination.
check_cmd() {
    local extra=()
    [ "$3" = deep ] && extra+=(--deep)
    # mbsync 1.4 does not sync keywords.
    [ "$2" = verbatim ] && extra+=(--no-keywords)
    printf '%q ' python3 "$helper" check "$manifest" "$1" --layout "$2" "${extra[@]}"
}

q() {
    printf '%q ' "$@"
}

corpus_bytes=$(du -sb "$src" | cut -f1)
{
    echo
    echo "source: alice's Maildir $src"
    echo "  $src_summary (Dovecot counted $served_msgs); corpus.py --messages $MESSAGES --bytes $BYTES --seed $SEED, plus one $BIG_BYTES-byte message"
    echo "  indexed by Dovecot before timing: $(q "${dv[@]}" -o "mail_location=maildir:$src" mailbox status 'messages vsize' '*')"
    echo "server: dovecot -F -c $conf (imap on 127.0.0.1:$port, ssl = no, user alice / pass)"
    echo "commands (each destination removed before every migration run; reruns reuse it):"
    echo "  cp -a + sync: $(q "${cp_cmd[@]}")"
    echo "  boxsync:      $(q "${boxsync_cmd[@]}")   (also rm -rf $bidx before each migration)"
    echo "  doveadm:      $(q "${doveadm_cmd[@]}")"
    if [ -n "$have_mbsync" ]; then
        echo "  mbsync:       $(q "${mbsync_cmd[@]}")   with $mbsyncrc:"
        sed 's/^/                  /' "$mbsyncrc"
    fi
    echo "measured with: sync (untimed); /usr/bin/time -f %M timeout $TIMEOUT COMMAND"
    echo
} | tee "$run/commands.txt" >&2

tools=(boxsync doveadm)
if [ -n "$have_mbsync" ]; then tools+=(mbsync); fi

# One migration of TOOL into a fresh destination; DEEP = deep|count.
migrate() {
    local tool=$1 rep=$2 deep=$3
    case $tool in
    boxsync)
        rm -rf "$bdst" "$bidx"
        timed migration boxsync "$rep" "$(check_cmd "$bdst" maildir++ "$deep")" "${boxsync_cmd[@]}"
        ;;
    doveadm)
        rm -rf "$ddst"
        mkdir -p "$ddst"
        own "$run/doveadm"
        timed migration doveadm "$rep" "$(check_cmd "$ddst" maildir++ "$deep")" "${doveadm_cmd[@]}"
        ;;
    mbsync)
        rm -rf "$mdst"
        mkdir -p "$mdst"
        timed migration mbsync "$rep" "$(check_cmd "$mdst" verbatim "$deep")" "${mbsync_cmd[@]}"
        ;;
    esac
}

rerun() {
    local tool=$1 rep=$2
    case $tool in
    boxsync) timed "rerun, no changes" boxsync "$rep" "$(check_cmd "$bdst" maildir++ count)" "${boxsync_cmd[@]}" ;;
    doveadm) timed "rerun, no changes" doveadm "$rep" "$(check_cmd "$ddst" maildir++ count)" "${doveadm_cmd[@]}" ;;
    mbsync) timed "rerun, no changes" mbsync "$rep" "$(check_cmd "$mdst" verbatim count)" "${mbsync_cmd[@]}" ;;
    esac
}

say "$src_summary served; $RUNS runs each; tool order rotates from run to run"
t_start=$(date +%s)
say "migrations (fresh destination each run; content compared in the first run, counts after)"
for rep in $(seq "$RUNS"); do
    rm -rf "$cdst"
    timed migration "cp -a + sync" "$rep" "" "${cp_cmd[@]}"
    rm -rf "$cdst"
    n=${#tools[@]}
    deep=count
    [ "$rep" -eq 1 ] && deep=deep
    for i in $(seq 0 $((n - 1))); do
        migrate "${tools[$(((i + rep - 1) % n))]}" "$rep" "$deep"
    done
done

say "reruns with no changes (same destinations and boxsync index)"
# As in run.sh: boxsync trusts recorded mtimes once they are 2 s old.
sleep 2
for rep in $(seq "$RUNS"); do
    n=${#tools[@]}
    for i in $(seq 0 $((n - 1))); do
        rerun "${tools[$(((i + rep - 1) % n))]}" "$rep"
    done
done
t_end=$(date +%s)

stop_dovecot

# --- report ----------------------------------------------------------------------------------

results="$here/results-imap-$(date +%Y-%m-%d-%H%M%S).txt"
{
    echo "boxsync IMAP migration benchmark, $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "machine: $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo), $(uname -sr)"
    echo "boxsync: $(git -C "$repo" rev-parse --short HEAD 2>/dev/null || echo '?')$(git -C "$repo" diff --quiet 2>/dev/null || echo ' (modified)')"
    echo "dovecot: $(dovecot --version 2>/dev/null || echo '?') (default settings: mail_fsync = optimized)"
    if [ -n "$have_mbsync" ]; then echo "mbsync: $(mbsync --version 2>/dev/null || echo '?')"; fi
    echo "corpus: $src_summary, $((corpus_bytes / 1048576)) MiB on disk with Dovecot's index"
    echo "runs: $RUNS per job, wall time median/min/max, peak RSS = max over runs (GNU time %M);"
    echo "      page cache not dropped (the corpus stays cached); measuring took $((t_end - t_start)) s"
    cat "$run/commands.txt"
    python3 "$helper" report "$raw"
} | tee "$results"
say "results written to $results; logs in $run/logs; Dovecot's log in $server/log"
