# shellcheck shell=bash
# A self-contained Dovecot config for doveadm mail commands, for scripts (demo, bench, sample).
# The shell twin of crates/boxsync/tests/common/dovecot.rs; source it, then:
#
#   dovecot_init DIR         writes DIR/dovecot.conf; sets DOVECOT_CONF and DOVECOT_HOME
#   dovecot_prepare PATH...  makes PATHs (mail stores) exist and belong to Dovecot's mail uid
#   doveadm_at LOCATION ARGS...   runs doveadm -c CONF -o mail_location=LOCATION ARGS...
#
# As root, Dovecot refuses to access mail as uid/gid 0 (even with first_valid_uid = 0), so it
# runs as uid/gid 5000 and every store it opens must belong to 5000 (it writes its index files
# into sources too). As any other user, it runs as that user and nothing is chowned.

DOVECOT_ROOT_MAIL_ID=5000

dovecot_init() {
    local base=$1
    mkdir -p "$base/run" "$base/state" "$base/log" "$base/home"
    local uid gid
    uid=$(id -u)
    gid=$(id -g)
    if [ "$uid" -eq 0 ]; then
        uid=$DOVECOT_ROOT_MAIL_ID
        gid=$DOVECOT_ROOT_MAIL_ID
    fi
    DOVECOT_CONF="$base/dovecot.conf"
    cat >"$DOVECOT_CONF" <<CONF
base_dir = $base/run
state_dir = $base/state
log_path = $base/log/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
first_valid_uid = 1
first_valid_gid = 1
mail_uid = $uid
mail_gid = $gid
mail_location = maildir:$base/home/Maildir
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
CONF
    chmod 755 "$base"
    dovecot_prepare "$base"
    DOVECOT_HOME="$base/home"
}

dovecot_prepare() {
    [ "$(id -u)" -eq 0 ] || return 0
    local p
    for p in "$@"; do
        mkdir -p "$p"
        chown -R "$DOVECOT_ROOT_MAIL_ID:$DOVECOT_ROOT_MAIL_ID" "$p"
    done
}

doveadm_at() {
    local loc=$1
    shift
    # doveadm mail commands without -u take the user name from USER (exit 64 without it),
    # and chdir to HOME, which the mail uid must be able to enter.
    USER=boxsync HOME="$DOVECOT_HOME" doveadm -c "$DOVECOT_CONF" -o "mail_location=$loc" "$@"
}
