//! The construction plan of a process tree: who forks whom, in which order,
//! and which temporary helpers recreate sessions and process groups whose
//! leaders are gone.
//!
//! A session id can only be inherited through fork or created by setsid; a
//! process group only created by its leader. So a process whose session
//! leader is dead is forked by a helper that takes the leader's pid and
//! calls setsid, using CLONE_PARENT so that the process still gets its real
//! parent; a group whose leader is dead is held open by a helper with the
//! leader's pid while the members join it. Helpers exit before the tree runs.

use std::collections::{BTreeMap, HashMap};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error("pid {pid}: its session {sid} is led by pid {sid}, which is in the image but is not an ancestor in that session; this layout cannot be rebuilt")]
    SessionLayout { pid: i32, sid: i32 },
    #[error("session {sid} must be recreated for children of two different parents ({a} and {b}); this layout cannot be rebuilt")]
    SharedSessionHelper { sid: i32, a: String, b: String },
    #[error("pid {pid} appears twice in the image")]
    DuplicatePid { pid: i32 },
}

/// The ids of one process as saved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// Index into the image's process list.
    Process(usize),
    /// Recreates session `pid` for the processes it forks, then exits.
    SessionHelper,
    /// Holds process group `pid` open while its members join, then exits.
    GroupHelper,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub pid: i32,
    pub kind: NodeKind,
    /// The node that forks this one; None: the restore root.
    pub forker: Option<usize>,
    /// Fork with CLONE_PARENT: the new process is a child of the forker's parent.
    pub clone_parent: bool,
    pub setsid: bool,
    /// Become a group leader right after birth.
    pub make_group: bool,
    /// Join this group once every group exists.
    pub join_group: Option<i32>,
    /// Namespaces made for it at its birth (`CLONE_NEWNET`,
    /// `CLONE_NEWIPC`, `CLONE_NEWPID`): set after planning, see
    /// [`namespace_flags`] and [`pid_namespaces`].
    pub ns_flags: u64,
    /// Its pids in nested pid namespaces, outermost first (taken with
    /// `set_tid` along with `pid`); empty for most.
    pub ns_pids: Vec<i32>,
}

/// Sets each process node's pids in nested pid namespaces, and
/// `CLONE_NEWPID` for the first process (pid 1) of a namespace its forker
/// is one level above. `ns_pids(i)`: process `i`'s, outermost first.
pub fn pid_namespaces(plan: &mut Plan, ns_pids: &dyn Fn(usize) -> Vec<i32>) {
    for k in 0..plan.nodes.len() {
        let own = match plan.nodes[k].kind {
            NodeKind::Process(i) => ns_pids(i),
            _ => Vec::new(),
        };
        let forker_depth = plan.nodes[k]
            .forker
            .map_or(0, |f| plan.nodes[f].ns_pids.len());
        if own.last() == Some(&1) && own.len() == forker_depth + 1 {
            plan.nodes[k].ns_flags |= libc::CLONE_NEWPID as u64;
        }
        plan.nodes[k].ns_pids = own;
    }
}

/// Sets each process node's namespaces to make at birth: a network or IPC
/// namespace of its own that its forker does not have (a process that
/// shares its forker's inherits it by the fork, as the saved ones did).
/// `own(i)`: (net, ipc) namespace inodes of process `i` when it has its
/// own, else None per kind.
pub fn namespace_flags(plan: &mut Plan, own: &dyn Fn(usize) -> (Option<u64>, Option<u64>)) {
    let owned: Vec<(Option<u64>, Option<u64>)> = plan
        .nodes
        .iter()
        .map(|n| match n.kind {
            NodeKind::Process(i) => own(i),
            _ => (None, None),
        })
        .collect();
    for (k, node) in plan.nodes.iter_mut().enumerate() {
        let (net, ipc) = owned[k];
        // What the forker has: a helper has the restorer's namespaces.
        let (fnet, fipc) = node.forker.map_or((None, None), |f| owned[f]);
        let mut flags = 0;
        if net.is_some() && net != fnet {
            flags |= libc::CLONE_NEWNET as u64;
        }
        if ipc.is_some() && ipc != fipc {
            flags |= libc::CLONE_NEWIPC as u64;
        }
        node.ns_flags = flags;
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Nodes in an order where each forker comes before what it forks; a
    /// node forks its children in this order.
    pub nodes: Vec<Node>,
    /// Processes put in the restorer's session or group because theirs is
    /// led by a live process outside the image: (pid, what).
    pub foreign: Vec<(i32, String)>,
}

impl Plan {
    pub fn children(&self, forker: Option<usize>) -> impl Iterator<Item = usize> + '_ {
        self.nodes
            .iter()
            .enumerate()
            .filter(move |(_, n)| n.forker == forker)
            .map(|(i, _)| i)
    }
}

/// Where a process's session comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionSource {
    Own,
    Inherited,
    Helper(usize),
    /// Forked with CLONE_PARENT by its session's leader, a sibling in the
    /// image (a bus started with `--fork`, as dbus-launch does, leads the
    /// session of the services it activates; they are orphans).
    Leader(usize),
    Foreign,
}

/// Refuses, at checkpoint, a tree whose sessions the restore could not
/// rebuild (found then, not after `--stop` ended the session). Pids are
/// taken as free: the saved processes will have ended.
pub fn refuse_unbuildable(
    processes: &[crate::snapshot::ProcessImage],
    report: &mut crate::policy::Report,
) {
    let ids: Vec<Ids> = processes
        .iter()
        .map(|p| Ids {
            pid: p.pid,
            ppid: p.ppid,
            pgid: p.pgid,
            sid: p.sid,
        })
        .collect();
    let (pid, what) = match plan(&ids, &|_| true) {
        Ok(_) => return,
        Err(e @ PlanError::SessionLayout { pid, .. }) => (pid, e.to_string()),
        Err(e @ PlanError::DuplicatePid { pid }) => (pid, e.to_string()),
        Err(e @ PlanError::SharedSessionHelper { sid, .. }) => (
            ids.iter().find(|p| p.sid == sid).map_or(sid, |p| p.pid),
            e.to_string(),
        ),
    };
    report.add(
        pid,
        crate::policy::Subject::Process,
        "its session and process group",
        crate::policy::Policy::Refuse,
        what,
    );
}

/// The node whose child `node` will be (None: the restore root): its
/// forker, or with CLONE_PARENT its forker's parent.
fn parent_of(nodes: &[Node], mut node: usize) -> Option<usize> {
    while nodes[node].clone_parent {
        node = nodes[node].forker?;
    }
    nodes[node].forker
}

/// Build the plan. `pid_free(pid)` says whether a pid outside the image can
/// be taken by a helper now.
pub fn plan(procs: &[Ids], pid_free: &dyn Fn(i32) -> bool) -> Result<Plan, PlanError> {
    let mut by_pid = HashMap::new();
    for (i, p) in procs.iter().enumerate() {
        if by_pid.insert(p.pid, i).is_some() {
            return Err(PlanError::DuplicatePid { pid: p.pid });
        }
    }
    // Parents before children: order by depth in the saved tree.
    let depth = |mut i: usize| {
        let mut d = 0;
        while let Some(&parent) = by_pid.get(&procs[i].ppid) {
            d += 1;
            i = parent;
            if d > procs.len() {
                break;
            }
        }
        d
    };
    let mut order: Vec<usize> = (0..procs.len()).collect();
    // Session leaders first at each depth: a sibling in a leader's session
    // may be forked by it.
    order.sort_by_key(|&i| (depth(i), procs[i].sid != procs[i].pid, procs[i].pid));

    let mut out = Plan::default();
    let mut node_of: HashMap<i32, usize> = HashMap::new();
    // Session of each created process node, as it will be at fork time of its children.
    let mut session_of: HashMap<usize, Option<i32>> = HashMap::new();
    let mut session_helpers: BTreeMap<i32, (usize, Option<usize>)> = BTreeMap::new();
    let mut group_helpers: BTreeMap<i32, usize> = BTreeMap::new();
    // The group each node is in when it forks its children: the one it
    // leads (it calls setsid or setpgid right after birth) or else the one
    // it was born into, its forker's (CLONE_PARENT too inherits the
    // caller's group). Joins come later, once every node is born. None:
    // the restorer's group.
    let mut group_at_fork: HashMap<usize, Option<i32>> = HashMap::new();
    let birth_group = |forker: Option<usize>, groups: &HashMap<usize, Option<i32>>| {
        forker.and_then(|f| groups[&f])
    };

    for &i in &order {
        let p = procs[i];
        let forker = by_pid.get(&p.ppid).map(|_| node_of[&p.ppid]);
        // None: the restorer's own session (foreign), which no image process has.
        let forker_sid: Option<i32> = match forker {
            Some(f) => session_of[&f],
            None => None,
        };
        let source = if p.sid == p.pid {
            SessionSource::Own
        } else if forker_sid == Some(p.sid) {
            SessionSource::Inherited
        } else if p.sid == 0 {
            out.foreign.push((
                p.pid,
                "its session (led by a process outside the pid namespace)".into(),
            ));
            SessionSource::Foreign
        } else if let Some(leader) = node_of
            .get(&p.sid)
            .copied()
            .filter(|&l| out.nodes[l].setsid && parent_of(&out.nodes, l) == forker)
        {
            SessionSource::Leader(leader)
        } else if by_pid.contains_key(&p.sid) {
            return Err(PlanError::SessionLayout {
                pid: p.pid,
                sid: p.sid,
            });
        } else if pid_free(p.sid) {
            let helper = match session_helpers.get(&p.sid) {
                Some(&(h, f)) if f == forker => h,
                Some(&(_, f)) => {
                    let name = |f: Option<usize>| {
                        f.map_or("the restorer".into(), |f| {
                            format!("pid {}", out.nodes[f].pid)
                        })
                    };
                    return Err(PlanError::SharedSessionHelper {
                        sid: p.sid,
                        a: name(f),
                        b: name(forker),
                    });
                }
                None => {
                    out.nodes.push(Node {
                        pid: p.sid,
                        kind: NodeKind::SessionHelper,
                        forker,
                        clone_parent: false,
                        setsid: true,
                        make_group: false,
                        join_group: None,
                        ns_flags: 0,
                        ns_pids: Vec::new(),
                    });
                    let h = out.nodes.len() - 1;
                    session_helpers.insert(p.sid, (h, forker));
                    group_at_fork.insert(h, Some(p.sid));
                    h
                }
            };
            SessionSource::Helper(helper)
        } else {
            out.foreign.push((
                p.pid,
                format!(
                    "session {} (its leader is a live process outside the image)",
                    p.sid
                ),
            ));
            SessionSource::Foreign
        };
        let (node_forker, clone_parent) = match source {
            SessionSource::Helper(h) | SessionSource::Leader(h) => (Some(h), true),
            _ => (forker, false),
        };
        let own_sid = match source {
            SessionSource::Own => Some(p.pid),
            SessionSource::Inherited | SessionSource::Helper(_) | SessionSource::Leader(_) => {
                Some(p.sid)
            }
            SessionSource::Foreign => None,
        };
        let mut node = Node {
            pid: p.pid,
            kind: NodeKind::Process(i),
            forker: node_forker,
            clone_parent,
            setsid: source == SessionSource::Own,
            // setsid already made it its group's leader (and setpgid on a
            // session leader fails).
            make_group: p.pgid == p.pid && source != SessionSource::Own,
            join_group: None,
            ns_flags: 0,
            ns_pids: Vec::new(),
        };
        if p.pgid != p.pid {
            let leader_in_image = by_pid.contains_key(&p.pgid);
            let inherited = match source {
                SessionSource::Helper(_) => p.pgid == p.sid,
                SessionSource::Foreign => false,
                _ => false,
            };
            // Forked by a node in that group (its leader, or a member born
            // into it): born in it.
            let born_in_group = birth_group(node_forker, &group_at_fork) == Some(p.pgid);
            if born_in_group {
                // Nothing to join.
            } else if p.pgid == 0 {
                out.foreign.push((
                    p.pid,
                    "its process group (led by a process outside the pid namespace)".into(),
                ));
            } else if leader_in_image || session_helpers.contains_key(&p.pgid) {
                // Its leader is a node (a session helper leads the group of
                // its session's id): the group exists when members join.
                node.join_group = Some(p.pgid);
            } else if inherited {
                // A session helper is also its group's leader: born into it.
            } else if own_sid.is_some() && pid_free(p.pgid) {
                let helper = *group_helpers.entry(p.pgid).or_insert_with(|| {
                    // Held open by a helper in the member's session, forked
                    // by the node that gives the member that session.
                    out.nodes.push(Node {
                        pid: p.pgid,
                        kind: NodeKind::GroupHelper,
                        forker: node_forker,
                        clone_parent: false,
                        setsid: false,
                        make_group: true,
                        join_group: None,
                        ns_flags: 0,
                        ns_pids: Vec::new(),
                    });
                    out.nodes.len() - 1
                });
                group_at_fork.insert(helper, Some(p.pgid));
                node.join_group = Some(p.pgid);
            } else {
                out.foreign.push((
                    p.pid,
                    format!("process group {} (its leader is outside the image)", p.pgid),
                ));
            }
        }
        let leads_group = node.setsid || node.make_group;
        let group = if leads_group {
            Some(p.pid)
        } else {
            birth_group(node.forker, &group_at_fork)
        };
        out.nodes.push(node);
        let idx = out.nodes.len() - 1;
        node_of.insert(p.pid, idx);
        session_of.insert(idx, own_sid);
        group_at_fork.insert(idx, group);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(pid: i32, ppid: i32, pgid: i32, sid: i32) -> Ids {
        Ids {
            pid,
            ppid,
            pgid,
            sid,
        }
    }

    /// A bus started with `--fork` (dbus-launch) leads its own session;
    /// the services it activates are orphans in that session: each is
    /// forked by the bus with CLONE_PARENT, so its parent is the root's.
    #[test]
    fn orphans_in_a_live_siblings_session_are_forked_by_that_leader() {
        let p = plan(
            &[
                ids(230, 1, 230, 230),
                ids(231, 230, 230, 230),
                ids(240, 1, 240, 240),
                ids(241, 1, 240, 240),
            ],
            &|_| true,
        )
        .unwrap();
        let at = |pid| p.nodes.iter().position(|n| n.pid == pid).unwrap();
        let service = &p.nodes[at(241)];
        assert_eq!(service.forker, Some(at(240)));
        assert!(service.clone_parent);
        assert!(!service.setsid);
        assert_eq!(service.join_group, None, "born in the bus's group");
        assert_eq!(parent_of(&p.nodes, at(241)), None, "a child of the root");
        assert!(at(240) < at(241));
        // A member whose leader is deeper in the tree (not a sibling)
        // still cannot be rebuilt.
        assert_eq!(
            plan(
                &[
                    ids(230, 1, 230, 230),
                    ids(250, 230, 250, 250),
                    ids(251, 1, 250, 250)
                ],
                &|_| true
            ),
            Err(PlanError::SessionLayout { pid: 251, sid: 250 })
        );
    }

    /// An orphan adopted by init in a session whose leader is gone, with a
    /// child of its own in the same group (at-spi-bus-launcher and its bus,
    /// activated by a session bus): the child is born in the group through
    /// its parent, and no second helper takes the leader's pid.
    #[test]
    fn a_member_born_in_a_helper_led_group_needs_no_second_helper() {
        let p = plan(&[ids(101, 1, 100, 100), ids(102, 101, 100, 100)], &|_| true).unwrap();
        let leaders: Vec<&Node> = p.nodes.iter().filter(|n| n.pid == 100).collect();
        assert_eq!(leaders.len(), 1, "{:?}", p.nodes);
        assert_eq!(leaders[0].kind, NodeKind::SessionHelper);
        let child = p.nodes.iter().find(|n| n.pid == 102).unwrap();
        assert_eq!(child.join_group, None, "born in group 100 through 101");
        assert_eq!(child.forker, p.nodes.iter().position(|n| n.pid == 101));
    }

    /// Inside a pid namespace, a session or group led from outside it
    /// reads as 0 (a container's processes, under `docker exec` or
    /// `unshare --pid`): the restorer's session and group stand in for it,
    /// and no helper may try to take pid 0.
    #[test]
    fn session_and_group_led_from_outside_the_namespace_are_the_restorers() {
        let p = plan(
            &[ids(10, 1, 0, 0), ids(11, 10, 0, 0), ids(12, 10, 12, 0)],
            &|_| true,
        )
        .unwrap();
        assert_eq!(p.nodes.len(), 3, "{:?}", p.nodes);
        assert!(p.nodes.iter().all(|n| n.pid != 0 && !n.setsid));
        let n11 = p.nodes.iter().find(|n| n.pid == 11).unwrap();
        assert_eq!((n11.forker, n11.join_group), (Some(0), None));
        assert!(p.nodes.iter().find(|n| n.pid == 12).unwrap().make_group);
        let foreign: Vec<i32> = p.foreign.iter().map(|f| f.0).collect();
        assert_eq!(foreign, [10, 10, 11, 11, 12]);
    }

    #[test]
    fn simple_tree_needs_no_helper() {
        // 100 leads its session and group; 101 inherits; 102 has its own group.
        let p = plan(
            &[
                ids(101, 100, 100, 100),
                ids(100, 1, 100, 100),
                ids(102, 100, 102, 100),
            ],
            &|_| true,
        )
        .unwrap();
        assert_eq!(p.nodes.len(), 3);
        assert_eq!(p.nodes[0].pid, 100);
        // setsid makes it its group's leader; setpgid would fail on a session leader.
        assert!(p.nodes[0].setsid && !p.nodes[0].make_group && p.nodes[0].forker.is_none());
        let n101 = p.nodes.iter().find(|n| n.pid == 101).unwrap();
        assert_eq!(
            (n101.forker, n101.join_group, n101.setsid),
            (Some(0), None, false)
        );
        let n102 = p.nodes.iter().find(|n| n.pid == 102).unwrap();
        assert!(n102.make_group);
        assert!(p.foreign.is_empty());
    }

    #[test]
    fn dead_session_leader_gets_a_helper_with_clone_parent() {
        // `setsid sh -c 'a & b &'` after sh exited: both orphans in session 50.
        let p = plan(&[ids(51, 1, 50, 50), ids(52, 1, 50, 50)], &|_| true).unwrap();
        assert_eq!(p.nodes[0].kind, NodeKind::SessionHelper);
        assert_eq!(p.nodes[0].pid, 50);
        assert!(p.nodes[0].setsid);
        for n in &p.nodes[1..] {
            assert_eq!(
                (n.forker, n.clone_parent, n.join_group),
                (Some(0), true, None)
            );
        }
    }

    #[test]
    fn dead_group_leader_gets_a_group_helper() {
        // Session 10 led by 10 (in image); group 20's leader is gone.
        let p = plan(
            &[ids(10, 1, 10, 10), ids(21, 10, 20, 10), ids(22, 10, 20, 10)],
            &|_| true,
        )
        .unwrap();
        let helpers: Vec<_> = p
            .nodes
            .iter()
            .filter(|n| n.kind == NodeKind::GroupHelper)
            .collect();
        assert_eq!(helpers.len(), 1);
        assert_eq!(
            (helpers[0].pid, helpers[0].forker, helpers[0].make_group),
            (20, Some(0), true)
        );
        for pid in [21, 22] {
            let n = p.nodes.iter().find(|n| n.pid == pid).unwrap();
            assert_eq!(n.join_group, Some(20));
        }
    }

    #[test]
    fn live_foreign_session_is_reported_not_rebuilt() {
        // A process started from a shell that is still running (pid 7 taken).
        let p = plan(&[ids(30, 7, 30, 7)], &|pid| pid != 7).unwrap();
        assert_eq!(p.nodes.len(), 1);
        assert!(!p.nodes[0].setsid);
        assert!(p.nodes[0].make_group);
        assert_eq!(p.foreign.len(), 1);
        assert!(p.foreign[0].1.contains("session 7"));
    }

    #[test]
    fn leader_elsewhere_in_image_is_refused() {
        // 41's session is led by 40, but 41's parent 42 is in another session.
        let err = plan(
            &[ids(40, 1, 40, 40), ids(42, 1, 42, 42), ids(41, 42, 40, 40)],
            &|_| true,
        )
        .unwrap_err();
        assert_eq!(err, PlanError::SessionLayout { pid: 41, sid: 40 });
    }

    #[test]
    fn parents_come_before_children() {
        let p = plan(
            &[ids(3, 2, 1, 1), ids(2, 1, 1, 1), ids(1, 0, 1, 1)],
            &|_| true,
        )
        .unwrap();
        let pos = |pid| p.nodes.iter().position(|n| n.pid == pid).unwrap();
        assert!(pos(1) < pos(2) && pos(2) < pos(3));
    }
}
