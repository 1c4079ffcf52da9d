//! Message sync of one mailbox: from both sides' change lists, what each side must do. Both
//! brains compute the same plan from the same two lists; each carries out its own half.
//!
//! Rules (dsync's, reference §2.3–2.8): messages match by UID and GUID; an expunge on one side
//! expunges the same UID+GUID on the other; a message only one side has is copied, keeping its
//! UID when that is free on the other side, otherwise both sides give it (and any clashing
//! message) a new UID from max(UIDNEXT), the master's mail first; flags merge per flag and per
//! keyword, a flag both sides changed going to the higher modseq (the master on a tie). A backup
//! makes the destination equal to the source; a one-way merge never changes the source.

use crate::{Mode, Role};
use boxsync_model::{Flags, Keywords, Modseq, Uid};
use boxsync_proto::{ChangeType, MailChange};
use std::collections::{BTreeMap, HashMap};

/// One side's `C` list with its counters.
#[derive(Clone, Debug, Default)]
pub struct SideChanges {
    pub saves: BTreeMap<Uid, MailChange>,
    pub expunges: BTreeMap<Uid, String>,
    pub uidnext: Uid,
}

impl SideChanges {
    pub fn new(changes: Vec<MailChange>, uidnext: Uid) -> SideChanges {
        let mut s = SideChanges {
            uidnext,
            ..Default::default()
        };
        for c in changes {
            match c.change_type {
                ChangeType::Expunge => {
                    s.expunges.insert(c.uid, c.guid);
                }
                _ => {
                    s.saves.insert(c.uid, c);
                }
            }
        }
        s
    }
}

/// What one side does to its own mailbox.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Copy the peer's message (peer UID `from`) in as UID `uid`.
    Save {
        uid: Uid,
        from: Uid,
        guid: String,
        flags: Flags,
        keywords: Keywords,
    },
    /// Expunge UID if it still holds this GUID.
    Expunge { uid: Uid, guid: String },
    /// Set the flags of UID if it holds this GUID (a no-op when they are already so).
    SetFlags {
        uid: Uid,
        guid: String,
        flags: Flags,
        keywords: Keywords,
    },
    /// Give a message a new UID.
    Move { from: Uid, to: Uid },
    /// Restore the flags of the last sync (backup undoing a destination-side change).
    RevertFlags { uid: Uid },
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MailboxPlan {
    /// Index 0: the master's actions, 1: the slave's.
    pub actions: [Vec<Action>; 2],
    pub uidnext: Uid,
}

impl MailboxPlan {
    pub fn is_empty(&self) -> bool {
        self.actions.iter().all(Vec::is_empty)
    }
}

/// The merged flags of a message both sides have.
pub fn merge_flags(m: &MailChange, s: &MailChange) -> (Flags, Keywords) {
    let pick = |in_m: bool, in_s: bool, changed_m: bool, changed_s: bool| -> bool {
        // Agreement, or a flag only one side changed since the last sync, decides; otherwise
        // the higher modseq, and the master on a tie.
        let take_s = if in_m == in_s || (changed_m && !changed_s) {
            false
        } else {
            (changed_s && !changed_m) || s.modseq > m.modseq
        };
        if take_s { in_s } else { in_m }
    };
    let mut flags = Flags::EMPTY;
    for (f, _) in Flags::NAMES {
        let changed = |c: &MailChange| c.add_flags.union(c.remove_flags).contains(f);
        if pick(
            m.final_flags.contains(f),
            s.final_flags.contains(f),
            changed(m),
            changed(s),
        ) {
            flags = flags.union(f);
        }
    }
    let km: Keywords = m.final_keywords().map(str::to_owned).collect();
    let ks: Keywords = s.final_keywords().map(str::to_owned).collect();
    let mut keywords = Keywords::new();
    for k in km.union(&ks) {
        if pick(
            km.contains(k),
            ks.contains(k),
            m.keyword_changed(k),
            s.keyword_changed(k),
        ) {
            keywords.insert(k.clone());
        }
    }
    (flags, keywords)
}

fn flags_of(c: &MailChange) -> (Flags, Keywords) {
    (
        c.final_flags,
        c.final_keywords().map(str::to_owned).collect(),
    )
}

/// Plans one mailbox. `last_common_uid` is 0 unless both lists are incremental from a state.
pub fn plan(
    master: &SideChanges,
    slave: &SideChanges,
    mode: Mode,
    last_common_uid: Uid,
) -> MailboxPlan {
    plan_filtered(master, slave, mode, last_common_uid, &|_| true)
}

/// [`plan`] where a side saves a mail it is missing only when `wants` says so (the sync
/// filters `-t`/`-e`/`-I`/`-O`); mail both sides have is not affected.
pub fn plan_filtered(
    master: &SideChanges,
    slave: &SideChanges,
    mode: Mode,
    last_common_uid: Uid,
    wants: &dyn Fn(&MailChange) -> bool,
) -> MailboxPlan {
    match mode {
        Mode::Backup { source } => {
            let (src, dst) = if source == Role::Master {
                (master, slave)
            } else {
                (slave, master)
            };
            let mut p = MailboxPlan {
                uidnext: src.uidnext,
                ..Default::default()
            };
            p.actions[1 - source.index()] = plan_backup(src, dst, last_common_uid, wants);
            p
        }
        Mode::TwoWay => plan_merge(master, slave, None, last_common_uid, wants),
        Mode::OneWay { source } => {
            plan_merge(master, slave, Some(source.index()), last_common_uid, wants)
        }
    }
}

fn plan_backup(
    src: &SideChanges,
    dst: &SideChanges,
    lcu: Uid,
    wants: &dyn Fn(&MailChange) -> bool,
) -> Vec<Action> {
    let mut out = Vec::new();
    for (&uid, guid) in &src.expunges {
        out.push(Action::Expunge {
            uid,
            guid: guid.clone(),
        });
    }
    for (&uid, s) in &src.saves {
        let (flags, keywords) = flags_of(s);
        match dst.saves.get(&uid) {
            Some(d) if d.guid == s.guid => {
                out.push(Action::SetFlags {
                    uid,
                    guid: s.guid.clone(),
                    flags,
                    keywords,
                });
            }
            Some(d) => {
                out.push(Action::Expunge {
                    uid,
                    guid: d.guid.clone(),
                });
                if wants(s) {
                    out.push(Action::Save {
                        uid,
                        from: uid,
                        guid: s.guid.clone(),
                        flags,
                        keywords,
                    });
                }
            }
            None if uid <= lcu && !dst.expunges.contains_key(&uid) => {
                // Unchanged on the destination since the last sync: it has the message.
                out.push(Action::SetFlags {
                    uid,
                    guid: s.guid.clone(),
                    flags,
                    keywords,
                });
            }
            None if !wants(s) => {}
            None => out.push(Action::Save {
                uid,
                from: uid,
                guid: s.guid.clone(),
                flags,
                keywords,
            }),
        }
    }
    for (&uid, d) in &dst.saves {
        if src.saves.contains_key(&uid) {
            continue;
        }
        if uid <= lcu && !src.expunges.contains_key(&uid) {
            out.push(Action::RevertFlags { uid });
        } else {
            out.push(Action::Expunge {
                uid,
                guid: d.guid.clone(),
            });
        }
    }
    // Mail the destination lost since the last sync is in the source's list even when the
    // source did not change it (see `sync_mailbox`), and so is saved again above.
    out
}

fn plan_merge(
    m: &SideChanges,
    s: &SideChanges,
    source: Option<usize>,
    lcu: Uid,
    wants: &dyn Fn(&MailChange) -> bool,
) -> MailboxPlan {
    let sides = [m, s];
    let writable = |x: usize| source != Some(x);
    let mut p = MailboxPlan::default();
    // Mail that must not be copied: expunged on the other side.
    let mut gone: [std::collections::HashSet<Uid>; 2] = Default::default();
    for x in 0..2 {
        let y = 1 - x;
        for (&uid, guid) in &sides[x].expunges {
            if sides[y].saves.get(&uid).is_some_and(|c| c.guid != *guid) {
                continue;
            }
            gone[y].insert(uid);
            if writable(y) {
                p.actions[y].push(Action::Expunge {
                    uid,
                    guid: guid.clone(),
                });
            }
        }
    }

    // -1 leaves the two sides' UIDs apart, so a mail the destination expunged is known there
    // by its GUID only: the source's copy of it is not new to the destination.
    let expunged_guids: [std::collections::HashSet<&str>; 2] = match source {
        Some(_) => [
            m.expunges.values().map(String::as_str).collect(),
            s.expunges.values().map(String::as_str).collect(),
        ],
        None => Default::default(),
    };

    let mut new: [Vec<&MailChange>; 2] = Default::default();
    let uids: std::collections::BTreeSet<Uid> =
        m.saves.keys().chain(s.saves.keys()).copied().collect();
    for uid in uids {
        let here = [
            m.saves.get(&uid).filter(|_| !gone[0].contains(&uid)),
            s.saves.get(&uid).filter(|_| !gone[1].contains(&uid)),
        ];
        match here {
            [Some(a), Some(b)] if a.guid == b.guid => {
                let (flags, keywords) = merge_flags(a, b);
                for x in 0..2 {
                    if writable(x) {
                        p.actions[x].push(Action::SetFlags {
                            uid,
                            guid: a.guid.clone(),
                            flags,
                            keywords: keywords.clone(),
                        });
                    }
                }
            }
            [Some(a), Some(b)] => {
                if !expunged_guids[1].contains(a.guid.as_str()) {
                    new[0].push(a);
                }
                if !expunged_guids[0].contains(b.guid.as_str()) {
                    new[1].push(b);
                }
            }
            [Some(c), None] | [None, Some(c)] => {
                let x = if here[0].is_some() { 0 } else { 1 };
                let y = 1 - x;
                if uid <= lcu {
                    // Unchanged on the other side since the last sync: a flag change to copy.
                    if writable(y) && !gone[x].contains(&uid) {
                        let (flags, keywords) = flags_of(c);
                        p.actions[y].push(Action::SetFlags {
                            uid,
                            guid: c.guid.clone(),
                            flags,
                            keywords,
                        });
                    }
                } else if sides[y].expunges.get(&uid).is_none_or(|g| *g != c.guid)
                    && !expunged_guids[y].contains(c.guid.as_str())
                {
                    // An expunge of another mail under this UID (a backup lowered UIDNEXT
                    // and the UID was given again) does not concern this one.
                    new[x].push(c);
                }
            }
            [None, None] => {}
        }
    }

    // The same new mail on both sides (by GUID) is one mail.
    let mut linked: HashMap<&str, usize> = HashMap::new();
    for (i, c) in new[1].iter().enumerate() {
        linked.entry(c.guid.as_str()).or_insert(i);
    }
    let mut used = [vec![false; new[0].len()], vec![false; new[1].len()]];
    let mut next = m.uidnext.max(s.uidnext);
    let mut top = next;
    for (i, c) in new[0].iter().enumerate() {
        if let Some(&j) = linked.get(c.guid.as_str())
            && !used[1][j]
        {
            used[0][i] = true;
            used[1][j] = true;
            let other = new[1][j];
            let (flags, keywords) = merge_flags(c, other);
            if source.is_none() {
                let to = next;
                next += 1;
                p.actions[0].push(Action::Move { from: c.uid, to });
                p.actions[1].push(Action::Move {
                    from: other.uid,
                    to,
                });
                for x in 0..2 {
                    p.actions[x].push(Action::SetFlags {
                        uid: to,
                        guid: c.guid.clone(),
                        flags,
                        keywords: keywords.clone(),
                    });
                }
            }
        }
    }
    // New UIDs go out in Dovecot's order: by UID, and between two mails that had the same UID
    // on the two sides, the lower GUID (byte order) first, so that both sides, and a Dovecot
    // peer, number a conflict alike.
    let mut order: Vec<(usize, usize)> = (0..2)
        .flat_map(|x| (0..new[x].len()).map(move |i| (x, i)))
        .collect();
    order.sort_by(|&(xa, ia), &(xb, ib)| {
        let (a, b) = (new[xa][ia], new[xb][ib]);
        (a.uid, a.guid.as_bytes(), xa).cmp(&(b.uid, b.guid.as_bytes(), xb))
    });
    for (x, i) in order {
        let y = 1 - x;
        let c = new[x][i];
        if used[x][i] || !writable(y) || !wants(c) {
            continue;
        }
        let (flags, keywords) = flags_of(c);
        if c.uid >= sides[y].uidnext && !sides[y].saves.contains_key(&c.uid) {
            top = top.max(c.uid + 1);
            p.actions[y].push(Action::Save {
                uid: c.uid,
                from: c.uid,
                guid: c.guid.clone(),
                flags,
                keywords,
            });
        } else {
            let to = next;
            next += 1;
            if writable(x) {
                p.actions[x].push(Action::Move { from: c.uid, to });
            }
            p.actions[y].push(Action::Save {
                uid: to,
                from: c.uid,
                guid: c.guid.clone(),
                flags,
                keywords,
            });
        }
    }
    p.uidnext = m.uidnext.max(s.uidnext).max(next).max(top);
    p
}

/// The `C` record of a message as this side has it, with flag deltas since the last sync.
pub fn change_record(
    uid: Uid,
    guid: &str,
    flags: Flags,
    keywords: &Keywords,
    modseq: Modseq,
    base: Option<&(Flags, Keywords)>,
) -> MailChange {
    use boxsync_proto::KeywordChange;
    let (add_flags, remove_flags) = match base {
        Some((bf, _)) => (flags.minus(*bf), bf.minus(flags)),
        None => (Flags::EMPTY, Flags::EMPTY),
    };
    let mut keyword_changes = Vec::new();
    for k in keywords {
        let added = base.is_some_and(|(_, bk)| !bk.contains(k));
        keyword_changes.push(if added {
            KeywordChange::AddFinal(k.clone())
        } else {
            KeywordChange::Final(k.clone())
        });
    }
    if let Some((_, bk)) = base {
        for k in bk.difference(keywords) {
            keyword_changes.push(KeywordChange::Remove(k.clone()));
        }
    }
    MailChange {
        change_type: ChangeType::Save,
        uid,
        guid: guid.to_owned(),
        modseq,
        add_flags,
        remove_flags,
        final_flags: flags,
        keywords_reset: false,
        keyword_changes,
        received_timestamp: 0,
        virtual_size: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn save(uid: Uid, guid: &str, flags: Flags) -> MailChange {
        change_record(uid, guid, flags, &Keywords::new(), 1, None)
    }

    fn side(saves: Vec<MailChange>, uidnext: Uid) -> SideChanges {
        SideChanges::new(saves, uidnext)
    }

    /// The man page's example: both sides got a different mail as UID 6; both become 7 and 8.
    #[test]
    fn uid_conflict_renumbers_both() {
        let m = side(
            vec![save(5, "a", Flags::EMPTY), save(6, "m6", Flags::EMPTY)],
            7,
        );
        let s = side(
            vec![save(5, "a", Flags::EMPTY), save(6, "s6", Flags::EMPTY)],
            7,
        );
        let p = plan(&m, &s, Mode::TwoWay, 0);
        assert!(p.actions[0].contains(&Action::Move { from: 6, to: 7 }));
        assert!(
            p.actions[1]
                .iter()
                .any(|a| matches!(a, Action::Save { uid: 7, from: 6, guid, .. } if guid == "m6"))
        );
        assert!(p.actions[1].contains(&Action::Move { from: 6, to: 8 }));
        assert!(
            p.actions[0]
                .iter()
                .any(|a| matches!(a, Action::Save { uid: 8, from: 6, guid, .. } if guid == "s6"))
        );
        assert_eq!(p.uidnext, 9);
    }

    #[test]
    fn a_uid_conflict_numbers_the_lower_guid_first_whichever_side_has_it() {
        // As Dovecot does: "1795351014.M102521…" sorts before "1795351014.M91920…" (byte
        // order), so the slave's mail gets 7 and the master's 8.
        let m = side(vec![save(6, "1795351014.M91920P1.vm", Flags::EMPTY)], 7);
        let s = side(vec![save(6, "1795351014.M102521P2.vm", Flags::EMPTY)], 7);
        let p = plan(&m, &s, Mode::TwoWay, 0);
        assert!(p.actions[1].contains(&Action::Move { from: 6, to: 7 }));
        assert!(p.actions[0].contains(&Action::Move { from: 6, to: 8 }));
        assert_eq!(p.uidnext, 9);
    }

    #[test]
    fn per_flag_merge() {
        let base = (Flags::EMPTY, Keywords::new());
        let a = change_record(1, "g", Flags::SEEN, &Keywords::new(), 5, Some(&base));
        let b = change_record(1, "g", Flags::FLAGGED, &Keywords::new(), 9, Some(&base));
        assert_eq!(merge_flags(&a, &b).0, Flags::SEEN.union(Flags::FLAGGED));
        // Both changed \Seen in opposite ways: the higher modseq wins.
        let base = (Flags::SEEN, Keywords::new());
        let a = change_record(
            1,
            "g",
            Flags::SEEN.union(Flags::DRAFT),
            &Keywords::new(),
            5,
            Some(&base),
        );
        let b = change_record(1, "g", Flags::EMPTY, &Keywords::new(), 9, Some(&base));
        assert_eq!(merge_flags(&a, &b).0, Flags::DRAFT);
    }

    #[test]
    fn expunge_propagates() {
        let mut m = side(vec![], 3);
        m.expunges.insert(2, "g2".into());
        let s = side(
            vec![save(1, "g1", Flags::EMPTY), save(2, "g2", Flags::EMPTY)],
            3,
        );
        let p = plan(&m, &s, Mode::TwoWay, 0);
        assert!(p.actions[1].contains(&Action::Expunge {
            uid: 2,
            guid: "g2".into()
        }));
        assert!(
            p.actions[0]
                .iter()
                .any(|a| matches!(a, Action::Save { .. })),
            "g1 is new on the slave"
        );
    }

    #[test]
    fn one_way_never_touches_the_source() {
        let m = side(vec![save(1, "a", Flags::SEEN)], 2);
        let s = side(vec![save(1, "b", Flags::EMPTY)], 2);
        let p = plan(
            &m,
            &s,
            Mode::OneWay {
                source: Role::Master,
            },
            0,
        );
        assert!(p.actions[0].is_empty());
        assert!(
            p.actions[1]
                .iter()
                .any(|a| matches!(a, Action::Save { guid, .. } if guid == "a"))
        );
    }
}
