//! Mailbox tree sync: from both sides' trees and tombstones, the tree both should end with.
//! Both brains run this on the same input and so reach the same answer; each then changes
//! only its own store to match.
//!
//! Rules (dsync's, reference §1.4–1.5): mailboxes are matched by GUID; a mailbox deleted on one
//! side is deleted on the other unless that side renamed it after the deletion; a rename wins
//! by its timestamp (a tie goes to the master); two mailboxes created independently under one
//! name become one (the lower GUID adopts the higher); other name clashes give the newer mailbox
//! the name `<name>-<guid>`; subscriptions go to the newer change, "subscribed" on a tie.
//!
//! Before planning, each side gives the other side's mailboxes names its own store can hold
//! ([`repair_names`], dsync's alt char), so each plan is in its own side's names: mailboxes are
//! matched by GUID, so the two plans still agree on which mailboxes there are.

use crate::{Mode, Role};
use boxsync_model::{Guid128, MailboxName};
use boxsync_proto::{Deletes, Existence, TreeNode};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

/// One side's tree as sent in `N` and `D` records.
#[derive(Clone, Debug, Default)]
pub struct TreeSide {
    pub nodes: Vec<TreeNode>,
    pub deletes: Deletes,
}

/// A mailbox of the tree both sides end with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FinalBox {
    pub guid: Guid128,
    pub name: MailboxName,
    /// For a side that must create it: the UIDVALIDITY the other side has.
    pub uidvalidity: u32,
    pub subscribed: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TreePlan {
    pub boxes: Vec<FinalBox>,
    /// Mailboxes whose GUID a side replaces with another: (old, new).
    pub guid_merges: Vec<(Guid128, Guid128)>,
    /// Mailboxes the destination of a one-way merge deleted itself; they stay deleted there.
    pub dest_skip: BTreeSet<Guid128>,
    /// Names a side could not read: left alone everywhere.
    pub untouchable: BTreeSet<MailboxName>,
}

fn by_guid(side: &TreeSide) -> BTreeMap<Guid128, &TreeNode> {
    side.nodes
        .iter()
        .filter(|n| !n.mailbox_guid.is_zero())
        .map(|n| (n.mailbox_guid, n))
        .collect()
}

fn tombstone(side: &TreeSide, guid: Guid128) -> Option<i64> {
    side.deletes
        .mailboxes
        .iter()
        .filter(|(g, _)| *g == guid)
        .map(|(_, t)| *t)
        .max()
}

fn unsubscribed_at(side: &TreeSide, name: &MailboxName) -> i64 {
    let hash = Guid128::sha128_of(&name.to_string());
    side.deletes
        .unsubscribes
        .iter()
        .filter(|(g, _)| *g == hash)
        .map(|(_, t)| *t)
        .max()
        .unwrap_or(0)
}

/// Gives the other side's mailboxes names this side's store can hold (dsync's
/// `dsync_alt_char` repair, reference §1.6): control characters become `alt`, then `fix` (the
/// store's `fix_name`) repairs what else the store cannot hold. A mailbox whose name no repair
/// makes fit, or whose repaired name is another of that side's mailboxes' name (as it is or
/// repaired), is named after its GUID instead, so that no two mailboxes share a name; the
/// repair never makes INBOX of another mailbox either.
///
/// Everything depends on the names alone, so a later sync repairs them the same way and the
/// mailbox this side made under the repaired name matches its original: no rename back.
/// Returns each changed name, old then new.
pub fn repair_names(
    nodes: &mut [TreeNode],
    alt: char,
    fix: impl Fn(&MailboxName) -> Option<MailboxName>,
) -> Vec<(MailboxName, MailboxName)> {
    let originals: HashSet<MailboxName> = nodes.iter().map(|n| n.name.clone()).collect();
    // `None`: the name fits as it is. `Some(None)`: nothing makes it fit.
    let repaired: Vec<Option<Option<MailboxName>>> = nodes
        .iter()
        .map(|n| {
            let fixed = n
                .name
                .replace_chars(char::is_control, alt)
                .ok()
                .and_then(|c| fix(&c));
            (fixed.as_ref() != Some(&n.name)).then_some(fixed)
        })
        .collect();
    let mut times_taken: HashMap<&MailboxName, usize> = HashMap::new();
    for name in repaired.iter().flatten().flatten() {
        *times_taken.entry(name).or_default() += 1;
    }
    let mut changed = Vec::new();
    for (n, fixed) in nodes.iter_mut().zip(&repaired) {
        let Some(fixed) = fixed else { continue };
        let usable = fixed.as_ref().filter(|f| {
            !originals.contains(*f)
                && times_taken.get(*f) == Some(&1)
                && f.is_inbox() == n.name.is_inbox()
        });
        let new = match (usable, n.mailbox_guid.is_zero()) {
            (Some(f), _) => f.clone(),
            // A name without a mailbox only keeps this side from touching that name: the
            // best repair there is, or the name as it is, does that.
            (None, true) => fixed.clone().unwrap_or_else(|| n.name.clone()),
            (None, false) => match MailboxName::from_parts([n.mailbox_guid.to_string()]) {
                Ok(g) => g,
                // Thirty-two hex digits are a valid level; kept as it is if that ever changed.
                Err(_) => continue,
            },
        };
        if new != n.name {
            changed.push((std::mem::replace(&mut n.name, new.clone()), new));
        }
    }
    changed
}

/// Computes the final tree. `side(Role)` order: index 0 is the master's tree, 1 the slave's.
pub fn plan(master: &TreeSide, slave: &TreeSide, mode: Mode) -> TreePlan {
    // A side sends a mailbox it cannot read as a nonexistent node: nothing of that name is
    // created, deleted, renamed or merged on either side.
    let untouchable: BTreeSet<MailboxName> = master
        .nodes
        .iter()
        .chain(&slave.nodes)
        .filter(|n| n.existence != Existence::Exists)
        .map(|n| n.name.clone())
        .collect();
    let keep = |side: &TreeSide| TreeSide {
        nodes: side
            .nodes
            .iter()
            .filter(|n| !untouchable.contains(&n.name))
            .cloned()
            .collect(),
        deletes: side.deletes.clone(),
    };
    let (master, slave) = (&keep(master), &keep(slave));
    let mut plan = plan_checked(master, slave, mode);
    plan.untouchable = untouchable;
    plan
}

fn plan_checked(master: &TreeSide, slave: &TreeSide, mode: Mode) -> TreePlan {
    match mode {
        Mode::Backup { source } => plan_backup(if source == Role::Master {
            (master, slave)
        } else {
            (slave, master)
        }),
        Mode::TwoWay | Mode::OneWay { .. } => plan_merge(master, slave, mode),
    }
}

fn plan_backup((src, dst): (&TreeSide, &TreeSide)) -> TreePlan {
    let dst_guids = by_guid(dst);
    let mut plan = TreePlan::default();
    for n in src.nodes.iter().filter(|n| !n.mailbox_guid.is_zero()) {
        plan.boxes.push(FinalBox {
            guid: n.mailbox_guid,
            name: n.name.clone(),
            uidvalidity: n.uid_validity,
            subscribed: n.subscribed,
        });
        if !dst_guids.contains_key(&n.mailbox_guid) {
            // A destination mailbox of the same name but another GUID adopts the source's GUID
            // and keeps its mail, so that nothing is copied again that is already there.
            if let Some(d) = dst
                .nodes
                .iter()
                .find(|d| d.name == n.name && !d.mailbox_guid.is_zero())
            {
                plan.guid_merges.push((d.mailbox_guid, n.mailbox_guid));
            }
        }
    }
    plan
}

fn plan_merge(master: &TreeSide, slave: &TreeSide, mode: Mode) -> TreePlan {
    let sides = [master, slave];
    let maps = [by_guid(master), by_guid(slave)];
    let source = match mode {
        Mode::OneWay { source } => Some(source.index()),
        _ => None,
    };
    let mut plan = TreePlan::default();
    let all: BTreeSet<Guid128> = maps[0].keys().chain(maps[1].keys()).copied().collect();
    let mut alive: Vec<(Guid128, MailboxName, u32, i64, Option<usize>)> = Vec::new();
    for guid in all {
        let here = [maps[0].get(&guid).copied(), maps[1].get(&guid).copied()];
        // Deleted on the side that lacks it, after the other side last renamed or created it?
        let mut deleted = false;
        for x in 0..2 {
            let y = 1 - x;
            if here[x].is_some() {
                continue;
            }
            if let (Some(ts), Some(node)) = (tombstone(sides[x], guid), here[y])
                && ts >= node.last_renamed_or_created
            {
                if source == Some(y) {
                    // One-way: the source keeps it; the destination's deletion stays its own.
                    plan.dest_skip.insert(guid);
                } else {
                    deleted = true;
                }
            }
        }
        if deleted {
            continue;
        }
        let (name, uidvalidity, ts, only) = match here {
            [Some(m), Some(s)] => {
                let winner = if s.last_renamed_or_created > m.last_renamed_or_created {
                    s
                } else {
                    m
                };
                (
                    winner.name.clone(),
                    winner.uid_validity,
                    winner.last_renamed_or_created,
                    None,
                )
            }
            [Some(m), None] => (
                m.name.clone(),
                m.uid_validity,
                m.last_renamed_or_created,
                Some(0),
            ),
            [None, Some(s)] => (
                s.name.clone(),
                s.uid_validity,
                s.last_renamed_or_created,
                Some(1),
            ),
            [None, None] => continue,
        };
        alive.push((guid, name, uidvalidity, ts, only));
    }

    // Name clashes.
    let mut by_name: BTreeMap<MailboxName, Vec<usize>> = BTreeMap::new();
    for (i, a) in alive.iter().enumerate() {
        // A mailbox the -1 destination deleted stays only on the source: it takes no name
        // there, so a new one of that name at the destination is another mailbox.
        if !plan.dest_skip.contains(&a.0) {
            by_name.entry(a.1.clone()).or_default().push(i);
        }
    }
    let mut merged_away = BTreeSet::new();
    let mut renames: BTreeMap<usize, MailboxName> = BTreeMap::new();
    for (name, idx) in &by_name {
        if idx.len() < 2 {
            continue;
        }
        let mut idx = idx.clone();
        // Two mailboxes made independently on the two sides under the same name: one mailbox.
        let m_only: Vec<usize> = idx
            .iter()
            .copied()
            .filter(|&i| alive[i].4 == Some(0))
            .collect();
        let s_only: Vec<usize> = idx
            .iter()
            .copied()
            .filter(|&i| alive[i].4 == Some(1))
            .collect();
        if let (Some(&a), Some(&b)) = (m_only.first(), s_only.first()) {
            // A one-way destination always adopts the source's GUID (dsync's backup-recv
            // rule): the source cannot change, and leaving both would rename one INBOX.
            let keep_a = match source {
                Some(src) => alive[a].4 == Some(src),
                None => alive[a].0 > alive[b].0,
            };
            let (keep, lose) = if keep_a { (a, b) } else { (b, a) };
            plan.guid_merges.push((alive[lose].0, alive[keep].0));
            merged_away.insert(lose);
            idx.retain(|&i| i != lose);
        }
        // Whoever had the name first keeps it.
        idx.sort_by_key(|&i| (alive[i].3, alive[i].0));
        for &i in idx.iter().skip(1) {
            renames.insert(i, name.with_suffix(&format!("-{}", alive[i].0)));
        }
    }

    for (i, (guid, name, uidvalidity, _, _)) in alive.iter().enumerate() {
        if merged_away.contains(&i) {
            continue;
        }
        let name = renames.get(&i).cloned().unwrap_or_else(|| name.clone());
        let sub = |x: usize| -> (bool, i64) {
            match maps[x].get(guid) {
                Some(n) => (n.subscribed, n.last_subscription_change),
                None => (false, unsubscribed_at(sides[x], &name)),
            }
        };
        let (sm, ss) = (sub(0), sub(1));
        let subscribed = if ss.1 > sm.1 {
            ss.0
        } else if sm.1 > ss.1 {
            sm.0
        } else {
            sm.0 || ss.0
        };
        plan.boxes.push(FinalBox {
            guid: *guid,
            name,
            uidvalidity: *uidvalidity,
            subscribed,
        });
    }
    plan.boxes.sort_by(|a, b| a.name.cmp(&b.name));
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, guid: u8, ts: i64) -> TreeNode {
        TreeNode {
            name: MailboxName::parse(name).unwrap(),
            existence: Existence::Exists,
            mailbox_guid: Guid128([guid; 16]),
            uid_validity: 1,
            uid_next: 1,
            last_renamed_or_created: ts,
            subscribed: false,
            last_subscription_change: 0,
        }
    }

    fn side(nodes: Vec<TreeNode>) -> TreeSide {
        TreeSide {
            nodes,
            deletes: Deletes::default(),
        }
    }

    fn names(p: &TreePlan) -> Vec<String> {
        p.boxes.iter().map(|b| b.name.to_string()).collect()
    }

    #[test]
    fn newer_rename_wins() {
        let m = side(vec![node("A", 1, 10)]);
        let s = side(vec![node("B", 1, 20)]);
        assert_eq!(names(&plan(&m, &s, Mode::TwoWay)), ["B"]);
        let s = side(vec![node("B", 1, 5)]);
        assert_eq!(names(&plan(&m, &s, Mode::TwoWay)), ["A"]);
    }

    #[test]
    fn delete_propagates_unless_renamed_later() {
        let m = side(vec![]);
        let mut m = m;
        m.deletes.mailboxes.push((Guid128([1; 16]), 100));
        let s = side(vec![node("A", 1, 50)]);
        assert!(plan(&m, &s, Mode::TwoWay).boxes.is_empty());
        let s = side(vec![node("A", 1, 150)]);
        assert_eq!(names(&plan(&m, &s, Mode::TwoWay)), ["A"]);
    }

    #[test]
    fn independent_creations_merge() {
        let m = side(vec![node("INBOX", 1, 0)]);
        let s = side(vec![node("INBOX", 2, 0)]);
        let p = plan(&m, &s, Mode::TwoWay);
        assert_eq!(names(&p), ["INBOX"]);
        assert_eq!(p.guid_merges, vec![(Guid128([1; 16]), Guid128([2; 16]))]);
    }

    #[test]
    fn rename_onto_a_taken_name_gets_a_suffix() {
        let m = side(vec![node("A", 1, 0), node("X", 2, 0)]);
        let s = side(vec![node("X", 1, 10), node("A", 2, 0)]);
        let p = plan(&m, &s, Mode::TwoWay);
        assert_eq!(p.boxes.len(), 2);
        let ns = names(&p);
        assert!(ns.contains(&"X".to_owned()), "{ns:?}");
    }

    /// What a Maildir++ store does: `.` inside a level becomes the alt char.
    fn maildir_plus_plus(name: &MailboxName, alt: char) -> Option<MailboxName> {
        let fixed = name.replace_chars(|c| c == '.', alt).ok()?;
        (fixed.to_string().len() <= 40).then_some(fixed)
    }

    fn repaired(names: &[(&str, u8)], alt: char) -> (Vec<String>, usize) {
        let mut nodes: Vec<TreeNode> = names.iter().map(|(n, g)| node(n, *g, 0)).collect();
        let changed = repair_names(&mut nodes, alt, |n| maildir_plus_plus(n, alt));
        (
            nodes.iter().map(|n| n.name.to_string()).collect(),
            changed.len(),
        )
    }

    #[test]
    fn other_sides_names_are_repaired_for_this_store() {
        let (names, changed) = repaired(&[("a.b", 1), ("Work/x.y", 2), ("c\u{1}d", 3)], '_');
        assert_eq!(names, ["a_b", "Work/x_y", "c_d"]);
        assert_eq!(changed, 3);
        let (names, _) = repaired(&[("a.b", 1)], '+');
        assert_eq!(names, ["a+b"]);
        let (names, changed) = repaired(&[("INBOX", 1), ("fine", 2)], '_');
        assert_eq!((names, changed), (vec!["INBOX".into(), "fine".into()], 0));
    }

    #[test]
    fn repairs_that_collide_or_fail_take_the_guid() {
        let g = |b: u8| Guid128([b; 16]).to_string();
        // `a_b` is the other side's own name: the repaired `a.b` may not take it.
        let (names, _) = repaired(&[("a.b", 1), ("a_b", 2)], '_');
        assert_eq!(names, [g(1), "a_b".into()]);
        // Two repairs onto one name: neither wins, whatever the order.
        let (names, _) = repaired(&[("x.y", 3), ("x\u{1}y", 4)], '_');
        assert_eq!(names, [g(3), g(4)]);
        let (names, _) = repaired(&[("x\u{1}y", 4), ("x.y", 3)], '_');
        assert_eq!(names, [g(4), g(3)]);
        // Too long for the store even when repaired.
        let long = format!("{}.{}", "a".repeat(30), "b".repeat(30));
        let (names, _) = repaired(&[(long.as_str(), 5)], '_');
        assert_eq!(names, [g(5)]);
        // An alt char that makes INBOX of another mailbox is refused too.
        let (names, _) = repaired(&[("inbo\u{1}", 6)], 'x');
        assert_eq!(names, [g(6)]);
        // The GUID name is stable: repairing it again changes nothing.
        let mut nodes = vec![node("a.b", 1, 0), node("a_b", 2, 0)];
        repair_names(&mut nodes, '_', |n| maildir_plus_plus(n, '_'));
        assert!(repair_names(&mut nodes, '_', |n| maildir_plus_plus(n, '_')).is_empty());
    }

    #[test]
    fn a_repaired_name_matches_the_mailbox_made_under_it() {
        // First sync: this Maildir++ side learns of `a.b` and plans `a_b`.
        let mut theirs = side(vec![node("INBOX", 9, 0), node("a.b", 1, 0)]);
        repair_names(&mut theirs.nodes, '_', |n| maildir_plus_plus(n, '_'));
        let source = Mode::Backup {
            source: Role::Master,
        };
        let p = plan(&theirs, &side(vec![node("INBOX", 9, 0)]), source);
        assert_eq!(names(&p), ["INBOX", "a_b"]);
        // Next sync: the same repair gives the name it now has, so nothing is renamed.
        let mine = side(vec![node("INBOX", 9, 0), node("a_b", 1, 0)]);
        let mut theirs = side(vec![node("INBOX", 9, 0), node("a.b", 1, 0)]);
        repair_names(&mut theirs.nodes, '_', |n| maildir_plus_plus(n, '_'));
        assert_eq!(names(&plan(&theirs, &mine, source)), ["INBOX", "a_b"]);
        assert_eq!(names(&plan(&mine, &theirs, Mode::TwoWay)), ["INBOX", "a_b"]);
    }

    #[test]
    fn backup_takes_the_source_tree() {
        let m = side(vec![node("A", 1, 0), node("INBOX", 3, 0)]);
        let s = side(vec![node("B", 2, 0), node("INBOX", 4, 0)]);
        let p = plan(
            &m,
            &s,
            Mode::Backup {
                source: Role::Master,
            },
        );
        assert_eq!(names(&p), ["A", "INBOX"]);
        assert_eq!(p.guid_merges, vec![(Guid128([4; 16]), Guid128([3; 16]))]);
    }
}
