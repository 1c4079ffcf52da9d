#!/usr/bin/env bash
# Regenerates sample/Maildir with real Dovecot (doveadm), then strips Dovecot's own index and
# cache files, which Dovecot rebuilds. File names carry the time and host of the run, so a
# regenerated sample differs in names but not in content.
#
#   bash sample/make-sample.sh            # writes sample/Maildir (must not exist)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out="$here/Maildir"
# shellcheck source=../scripts/lib/dovecot.sh
. "$here/../scripts/lib/dovecot.sh"

if [ -e "$out" ]; then
    echo "$out exists; remove it first" >&2
    exit 1
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
chmod 755 "$work"
dovecot_init "$work/dovecot"
store="$work/Maildir"
dovecot_prepare "$store"
loc="maildir:$store"

n=0
# msg MAILBOX FLAGS FROM SUBJECT DATE BODY — saves one message and sets its flags.
msg() {
    local box=$1 flags=$2 from=$3 subject=$4 date=$5 body=$6
    n=$((n + 1))
    printf 'From: %s\nTo: Dana Example <dana@example.com>\nSubject: %s\nDate: %s\nMessage-ID: <sample-%d@example.com>\nMIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n%s\n' \
        "$from" "$subject" "$date" "$n" "$body" | doveadm_at "$loc" save -m "$box"
    if [ -n "$flags" ]; then
        local uid
        uid=$(doveadm_at "$loc" -f tab mailbox status uidnext "$box" | awk -F'\t' 'END { print $NF }')
        doveadm_at "$loc" flags add "$flags" mailbox "$box" uid $((uid - 1))
    fi
}

# imap_select MAILBOX — opens it read-write as an IMAP client does, so Dovecot moves its mail
# from new/ to cur/ (doveadm alone leaves saved mail in new/).
imap_select() {
    printf 'a select "%s"\r\nb logout\r\n' "$1" |
        USER=boxsync HOME="$DOVECOT_HOME" /usr/lib/dovecot/imap -c "$DOVECOT_CONF" \
            -o "mail_location=$loc" >/dev/null 2>&1
}

doveadm_at "$loc" mailbox subscribe INBOX
doveadm_at "$loc" mailbox create -s Work
doveadm_at "$loc" mailbox create -s 'Work/Prøjekt'
doveadm_at "$loc" mailbox create 'Archive/2024'

msg INBOX '\Seen' 'Alice Martin <alice@example.org>' 'Lunch on Thursday?' \
    'Mon, 13 May 2024 09:12:44 +0200' \
    'Hi Dana,

are you free for lunch on Thursday? The new place near the station opened.

Alice'
msg INBOX '\Seen \Answered' 'Bob Keller <bob@example.net>' 'Re: Quarterly report draft' \
    'Tue, 14 May 2024 16:03:10 +0200' \
    'Thanks for the comments. I moved the figures to the appendix and fixed
the totals in table 3. New draft attached to the ticket.

Bob'
msg INBOX '\Seen $Important' 'Billing <billing@hosting.example>' 'Your invoice 2024-0412' \
    'Wed, 15 May 2024 06:00:00 +0000' \
    'Dear customer,

your invoice 2024-0412 over EUR 19.90 is available in the customer portal.
Payment is due on 29 May 2024.'
msg INBOX '' 'Weekly Digest <digest@news.example>' 'This week: storage, backups and you' \
    'Fri, 17 May 2024 07:30:00 +0000' \
    'Top stories this week:
- Why your backups are only as good as your last restore
- Maildir vs. mbox, revisited'
msg INBOX '\Seen \Flagged $Important' 'Ops Team <ops@example.com>' 'Server maintenance window Saturday' \
    'Fri, 17 May 2024 11:45:21 +0200' \
    'The mail server will be down on Saturday from 22:00 to 23:00 CEST for
the storage upgrade. Mail is queued and delivered afterwards.'
msg Work '\Seen' 'Carol Nguyen <carol@example.com>' 'Project kickoff notes' \
    'Mon, 06 May 2024 10:00:00 +0200' \
    'Notes from the kickoff:
1. Scope: migrate 40 mailboxes
2. Timeline: end of June
3. Owner: Dana'
msg Work '\Flagged' 'Carol Nguyen <carol@example.com>' 'Budget spreadsheet' \
    'Thu, 16 May 2024 14:22:37 +0200' \
    'Please review the budget before Friday; the hardware line is still open.'
msg 'Work/Prøjekt' '\Seen $Forwarded' 'Emil Dahl <emil@example.no>' 'Prøjekt status' \
    'Wed, 15 May 2024 08:15:00 +0200' \
    'Status: the test migration of five mailboxes went through without errors.'
msg 'Archive/2024' '\Seen' 'Alice Martin <alice@example.org>' 'Conference travel' \
    'Tue, 09 Jan 2024 12:00:00 +0100' \
    'Flights are booked; hotel confirmation follows.'
msg 'Archive/2024' '\Seen \Answered' 'Frank Ode <frank@example.org>' 'Old laptop' \
    'Thu, 22 Feb 2024 17:40:12 +0100' \
    'Do you still need the old laptop, or can it go to recycling?'

# A client read the mailboxes now; what arrives later stays in new/.
imap_select INBOX
imap_select Work
imap_select 'Archive/2024'
msg INBOX '' 'Jörg Weiß <joerg@example.de>' '=?UTF-8?Q?Gr=C3=BC=C3=9Fe_aus_M=C3=BCnchen?=' \
    'Sat, 18 May 2024 18:20:05 +0200' \
    'Hallo Dana,

viele Grüße aus München! Die Fotos schicke ich nächste Woche.

Jörg'

# Dovecot rebuilds its indexes and caches; keep only what the Maildir itself needs.
find "$store" \( -name 'dovecot.index*' -o -name 'dovecot.list.index*' \) -delete
mkdir -p "$(dirname "$out")"
cp -r "$store" "$out"
chmod -R u+rwX,go+rX,go-w "$out"
echo "wrote $out"
find "$out" | sort
