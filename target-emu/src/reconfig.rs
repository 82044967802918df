//! Live reconfiguration of a running bus (docs/semantics.md "Live
//! reconfiguration"): LUNs added, removed and resized, targets added and
//! removed, ACL entries and CHAP credentials changed, all while sessions
//! run, and the running configuration written back as the TOML the target
//! reads. The control plane's `/config/...` endpoints call these.
//!
//! Every change takes the registry's turn, so two changes never interleave
//! (a LUN path checked free stays free until the LUN is open), and is
//! checked completely before anything changes. What initiators see:
//! - LUN added or removed: 3F/0E REPORTED LUNS DATA HAS CHANGED on every
//!   I_T nexus of the target (`scsi::inventory`); REPORT LUNS lists the new
//!   inventory at once. Commands to other LUNs carry on undisturbed.
//! - LUN resized: 2A/09 CAPACITY DATA HAS CHANGED on every I_T nexus of
//!   that LU only (SBC-3 §4.6); READ CAPACITY reports the new size.
//! - A LUN with a reservation (SCSI-2 or persistent) or with commands in
//!   flight is not removed unless forced; forced, its commands are aborted
//!   and waited for. Unforced, commands that slip in before the LU leaves
//!   the table are waited for, never cut off. Either way the backing file
//!   is flushed and kept, with its `.pr` state, so re-adding the LUN with
//!   the same path brings its data (and APTPL registrations) back.
//! - A target with sessions is not removed unless forced; forced, its
//!   sessions end (as after a logout: tasks aborted, nexus loss reported)
//!   before the call returns.
//! - ACL: new logins obey the new list at once. Sessions of initiators the
//!   list no longer admits end, as in LIO when a node ACL is deleted, unless
//!   `keep_sessions` asks for tgt's behaviour (the ACL is only checked at
//!   login).
//! - CHAP: new logins use the new credentials; sessions that authenticated
//!   before are not affected (authentication happens at login, RFC 7143
//!   §12.1.3).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use busrig_proto::chap::{ChapCredentials, ChapTargetConfig};

use crate::config::{
    self, BusSpec, ChapConfig, ConfigError, LunConfig, LunDef, SizeValue, TargetConfig, TargetDef,
    ValidConfig,
};
use crate::iscsi::session::SessionHandle;
use crate::iscsi::{Portal, PortalTarget};
use crate::lu::{LogicalUnit, LunError};
use crate::model::Link;
use crate::scsi::{BusPeers, ScsiTarget};
use crate::tasks::AbortBy;

/// What the portal keeps for reconfigurations besides its targets.
pub struct Registry {
    /// Where LUN files with relative paths go.
    data_dir: PathBuf,
    /// Each bus's modelled link, shared by the targets on it, including
    /// targets added later.
    links: Vec<Option<Arc<Link>>>,
    /// Each bus's targets, which reach each other's LUs by EXTENDED COPY.
    peers: Vec<Arc<BusPeers>>,
    /// Held by one reconfiguration at a time.
    turn: tokio::sync::Mutex<()>,
}

impl Registry {
    pub fn new(
        data_dir: PathBuf,
        links: Vec<Option<Arc<Link>>>,
        peers: Vec<Arc<BusPeers>>,
    ) -> Registry {
        Registry {
            data_dir,
            links,
            peers,
            turn: tokio::sync::Mutex::new(()),
        }
    }

    /// The bus's modelled link.
    pub fn link(&self, bus: usize) -> Option<Arc<Link>> {
        self.links.get(bus).cloned().flatten()
    }

    /// The bus's list of targets for copies between them.
    pub fn peers(&self, bus: usize) -> Arc<BusPeers> {
        self.peers.get(bus).cloned().unwrap_or_default()
    }
}

/// Why a reconfiguration was refused; nothing changed.
#[derive(Debug, thiserror::Error)]
pub enum ReconfigError {
    /// No target has that name.
    #[error("no target named {0}")]
    NoTarget(String),
    /// The bus has several targets and the request named none.
    #[error("several targets: say which one with \"target\"")]
    WhichTarget,
    /// The target has no such LUN.
    #[error("target {target} has no LUN {lun}")]
    NoLun { target: String, lun: u64 },
    /// The LUN id is in use on that target.
    #[error("target {target} has a LUN {lun} already")]
    LunTaken { target: String, lun: u64 },
    /// Another LUN uses the backing file.
    #[error("path {path} is already used by LUN {lun} of target {target}", path = path.display())]
    PathTaken {
        path: PathBuf,
        target: String,
        lun: u64,
    },
    /// A target of that name exists.
    #[error("a target named {0} exists already")]
    TargetTaken(String),
    /// The new LUN or target breaks a configuration rule.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The LUN's backing file cannot be opened or resized.
    #[error(transparent)]
    Lun(#[from] LunError),
    /// The LUN has a reservation and removal was not forced.
    #[error("LUN {lun} of target {target} is reserved ({holder}); remove it with force to drop the reservation")]
    Reserved {
        target: String,
        lun: u64,
        holder: String,
    },
    /// Commands are running on the LUN and removal was not forced.
    #[error("LUN {lun} of target {target} has {count} command(s) in flight; remove it with force to abort them")]
    InFlight {
        target: String,
        lun: u64,
        count: usize,
    },
    /// Sessions are logged in to the target and removal was not forced.
    #[error("target {target} has {count} session(s); remove it with force to end them")]
    HasSessions { target: String, count: usize },
    /// A target keeps at least one LUN, a bus at least one target (the
    /// configuration file has the same rules).
    #[error("{0}")]
    LastOne(String),
    /// Shrinking loses data past the new end and was not forced.
    #[error("shrinking LUN {lun} of target {target} from {from} to {to} bytes loses the last {lost} bytes; resize it with force to do so", lost = from - to)]
    Shrink {
        target: String,
        lun: u64,
        from: u64,
        to: u64,
    },
    /// The initiator is already in (or not in) the ACL.
    #[error("{0}")]
    Acl(String),
    /// A request field is missing or malformed.
    #[error("{0}")]
    BadRequest(String),
}

impl ReconfigError {
    /// The HTTP status the control plane answers with.
    pub fn http_status(&self) -> u16 {
        use ReconfigError::*;
        match self {
            NoTarget(_) | NoLun { .. } => 404,
            WhichTarget | Config(_) | BadRequest(_) => 400,
            Lun(LunError::Io { .. }) => 500,
            Lun(_) => 400,
            LunTaken { .. }
            | PathTaken { .. }
            | TargetTaken(_)
            | Reserved { .. }
            | InFlight { .. }
            | HasSessions { .. }
            | LastOne(_)
            | Shrink { .. }
            | Acl(_) => 409,
        }
    }
}

/// What removing a LUN did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LunRemoved {
    pub target: String,
    pub lun: u64,
    /// Commands aborted (forced removal).
    pub aborted: usize,
    /// Commands that had started and were waited for.
    pub completed: usize,
    /// The flush of the backing file failed: its error.
    pub flush_error: Option<String>,
}

/// The index and current state of the target `name` names, or of the only
/// target when `name` is `None`.
fn find_target(
    portal: &Portal,
    name: Option<&str>,
) -> Result<(usize, Arc<PortalTarget>), ReconfigError> {
    let index = match name {
        Some(n) => portal
            .target_index(n)
            .ok_or_else(|| ReconfigError::NoTarget(n.to_string()))?,
        None => {
            let targets = portal.targets();
            if targets.len() != 1 {
                return Err(ReconfigError::WhichTarget);
            }
            portal
                .target_index(&targets[0].def.name)
                .ok_or_else(|| ReconfigError::NoTarget(targets[0].def.name.clone()))?
        }
    };
    let pt = portal
        .target(index)
        .ok_or_else(|| ReconfigError::NoTarget(name.unwrap_or_default().to_string()))?;
    Ok((index, pt))
}

/// The LUN using `path`, on any target.
fn path_user(portal: &Portal, path: &std::path::Path) -> Option<(String, u64)> {
    portal.targets().iter().find_map(|t| {
        t.def
            .luns
            .iter()
            .find(|l| l.path == path)
            .map(|l| (t.def.name.clone(), l.id))
    })
}

/// The logical unit `l` describes, for `LogicalUnit::open`.
pub fn lun_spec(l: &LunDef) -> crate::lu::LunSpec {
    let mut spec = crate::lu::LunSpec::new(
        l.id,
        l.path.clone(),
        l.size_bytes,
        l.block_size,
        l.read_only,
        l.serial.clone(),
    );
    spec.write_cache = l.write_cache;
    spec.removable = l.removable;
    spec.physical_block_size = l.physical_block_size;
    spec.model = l.model.clone();
    spec.resize = l.resize;
    spec
}

/// Opens the backing file of `def` (creating it, and its directory, when
/// missing) after checking its length against the `resize` permission.
fn open_lun(def: &LunDef, target: &str) -> Result<LogicalUnit, ReconfigError> {
    let spec = lun_spec(def);
    crate::lu::check_backing_file(&spec)?;
    if let Some(parent) = spec.path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| LunError::Io {
            lun: def.id,
            path: parent.to_path_buf(),
            source,
        })?;
    }
    Ok(LogicalUnit::open(spec, target)?)
}

/// Logs a weak CHAP configuration once, as the server does at start.
pub fn warn_weak_chap(target: &str, chap: &config::ChapSpec) {
    let initiator = ChapCredentials::new(chap.user.clone(), &chap.secret);
    let cfg = match &chap.mutual {
        None => ChapTargetConfig::one_way(initiator),
        Some((u, s)) => ChapTargetConfig::mutual(initiator, ChapCredentials::new(u.clone(), s)),
    };
    if let Err(e) = cfg.check() {
        // Weak secrets work with most initiators; say so once.
        tracing::warn!(target = %target, "CHAP configuration: {e}");
    }
}

/// Tells `sessions` to end and waits until each has (tasks aborted, nexus
/// loss reported). Returns how many there were.
async fn end_sessions(sessions: Vec<Arc<SessionHandle>>) -> usize {
    for s in &sessions {
        s.kill.cancel();
    }
    for s in &sessions {
        s.ended.cancelled().await;
    }
    sessions.len()
}

/// `lun add`: opens the LUN `lun` describes (a `[[target.lun]]` table) and
/// adds it to target `target`. Returns the target's name and the LUN.
pub async fn add_lun(
    portal: &Portal,
    target: Option<&str>,
    lun: &LunConfig,
) -> Result<(String, LunDef), ReconfigError> {
    let reg = portal.registry();
    let _turn = reg.turn.lock().await;
    let (index, pt) = find_target(portal, target)?;
    let name = pt.def.name.clone();
    let def = config::validate_lun(&name, lun, &reg.data_dir)?;
    if pt.scsi.lun(def.id).is_some() {
        return Err(ReconfigError::LunTaken {
            target: name,
            lun: def.id,
        });
    }
    if let Some((target, lun)) = path_user(portal, &def.path) {
        return Err(ReconfigError::PathTaken {
            path: def.path.clone(),
            target,
            lun,
        });
    }
    let lu = Arc::new(open_lun(&def, &name)?);
    pt.scsi.add_lun(lu).map_err(|e| ReconfigError::LunTaken {
        target: name.clone(),
        lun: e.0,
    })?;
    portal.update_target(index, |d| {
        d.luns.push(def.clone());
        d.luns.sort_by_key(|l| l.id);
    });
    tracing::info!(target = %name, lun = def.id, path = %def.path.display(), size_bytes = def.size_bytes, "LUN added");
    portal.faults().record(format!(
        "lun {} added to {name} ({} bytes, {})",
        def.id,
        def.size_bytes,
        def.path.display()
    ));
    Ok((name, def))
}

/// `lun remove`: takes LUN `lun` off target `target`. See the module docs
/// for what `force` does.
pub async fn remove_lun(
    portal: &Portal,
    target: Option<&str>,
    lun: u64,
    force: bool,
) -> Result<LunRemoved, ReconfigError> {
    let _turn = portal.registry().turn.lock().await;
    let (index, pt) = find_target(portal, target)?;
    let name = pt.def.name.clone();
    let Some(lu) = pt.scsi.lun(lun) else {
        return Err(ReconfigError::NoLun { target: name, lun });
    };
    if pt.scsi.lun_ids().len() == 1 {
        return Err(ReconfigError::LastOne(format!(
            "LUN {lun} is the last LUN of target {name}; remove the target instead"
        )));
    }
    let on_lun = |t: &crate::tasks::TaskInfo| t.lun == lun && *t.nexus.target == *name;
    if !force {
        if let Some(holder) = reservation_words(&lu) {
            return Err(ReconfigError::Reserved {
                target: name,
                lun,
                holder,
            });
        }
        let count = portal.tasks().count(on_lun);
        if count > 0 {
            return Err(ReconfigError::InFlight {
                target: name,
                lun,
                count,
            });
        }
    }
    pt.scsi.remove_lun(lun);
    // Commands that found the LU before it left the table.
    let (aborted, completed) = if force {
        (
            portal
                .tasks()
                .abort_matching(AbortBy::ControlPlane, on_lun)
                .await,
            0,
        )
    } else {
        (0, portal.tasks().wait_matching(on_lun).await)
    };
    let flush_error = lu.sync().await.err().map(|e| {
        tracing::error!(target = %name, lun, error = %e, "flushing the removed LUN failed");
        e.to_string()
    });
    portal.update_target(index, |d| d.luns.retain(|l| l.id != lun));
    // A fault of the old LUN must not wait for a new one of that number.
    clear_offline(portal, &name, lun);
    tracing::info!(target = %name, lun, force, aborted, completed, "LUN removed");
    portal.faults().record(format!(
        "lun {lun} removed from {name}{}",
        if force {
            format!(" (forced, {aborted} command(s) aborted)")
        } else {
            String::new()
        }
    ));
    Ok(LunRemoved {
        target: name,
        lun,
        aborted,
        completed,
        flush_error,
    })
}

/// Ends an `offline` fault of a LUN that is going away.
fn clear_offline(portal: &Portal, target: &str, lun: u64) {
    if portal.faults().is_lun_offline(target, lun) {
        portal.faults().set_lun_offline(target, lun, false);
    }
}

/// The reservation of `lu` in words, if it has one.
fn reservation_words(lu: &LogicalUnit) -> Option<String> {
    let r = lu.reservations.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(h) = r.scsi2_holder() {
        return Some(format!("SCSI-2 reservation held by {h}"));
    }
    let res = r.pr_snapshot().reservation?;
    Some(match res.holder {
        Some(h) => format!(
            "persistent reservation {} held by {h}",
            res.pr_type.short_name()
        ),
        None => format!(
            "persistent reservation {} of all registrants",
            res.pr_type.short_name()
        ),
    })
}

/// `lun resize`: sets the capacity of LUN `lun` to `size`. Growing keeps
/// every byte; shrinking needs `force`. Returns the target's name and the
/// old and new sizes in bytes.
pub async fn resize_lun(
    portal: &Portal,
    target: Option<&str>,
    lun: u64,
    size: &SizeValue,
    force: bool,
) -> Result<(String, u64, u64), ReconfigError> {
    let _turn = portal.registry().turn.lock().await;
    let (index, pt) = find_target(portal, target)?;
    let name = pt.def.name.clone();
    let Some(lu) = pt.scsi.lun(lun) else {
        return Err(ReconfigError::NoLun { target: name, lun });
    };
    let to = match size {
        SizeValue::Bytes(b) => *b,
        SizeValue::Text(t) => {
            config::parse_size(t).map_err(|why| ReconfigError::BadRequest(format!("size {why}")))?
        }
    };
    let from = lu.size_bytes();
    if to < from && !force {
        return Err(ReconfigError::Shrink {
            target: name,
            lun,
            from,
            to,
        });
    }
    lu.resize(to).await?;
    portal.update_target(index, |d| {
        if let Some(l) = d.luns.iter_mut().find(|l| l.id == lun) {
            l.size_bytes = to;
        }
    });
    portal.faults().record(format!(
        "lun {lun} of {name} resized from {from} to {to} bytes"
    ));
    Ok((name, from, to))
}

/// `target add`: a new target (a `[[target]]` table with its LUNs) on one
/// of the buses.
pub async fn add_target(portal: &Portal, t: &TargetConfig) -> Result<TargetDef, ReconfigError> {
    let reg = portal.registry();
    let _turn = reg.turn.lock().await;
    let mut buses: Vec<BusSpec> = portal.buses().to_vec();
    let mut bus_index: HashMap<String, usize> = buses
        .iter()
        .enumerate()
        .map(|(i, b)| (b.name.clone(), i))
        .collect();
    let def = config::validate_target(1, t, &mut buses, &mut bus_index, &reg.data_dir)?;
    if portal.target_index(&def.name).is_some() {
        return Err(ReconfigError::TargetTaken(def.name));
    }
    let mut paths = std::collections::HashSet::new();
    for l in &def.luns {
        if !paths.insert(l.path.clone()) {
            return Err(ReconfigError::BadRequest(format!(
                "lun {} of target {}: path {} is used twice",
                l.id,
                def.name,
                l.path.display()
            )));
        }
        if let Some((target, lun)) = path_user(portal, &l.path) {
            return Err(ReconfigError::PathTaken {
                path: l.path.clone(),
                target,
                lun,
            });
        }
    }
    // Every file is checked before any is created, as at start.
    for l in &def.luns {
        crate::lu::check_backing_file(&lun_spec(l))?;
    }
    if let Some(chap) = &def.chap {
        warn_weak_chap(&def.name, chap);
    }
    let mut luns = Vec::new();
    for l in &def.luns {
        luns.push(Arc::new(open_lun(l, &def.name)?));
    }
    let scsi = Arc::new(
        ScsiTarget::new(&def.name, luns, portal.tasks().clone())
            .with_faults(portal.faults().clone())
            .with_link(reg.link(def.bus))
            .with_peers(reg.peers(def.bus)),
    );
    reg.peers(def.bus).add(def.tpgt, &scsi);
    portal.add_target(PortalTarget {
        def: def.clone(),
        scsi,
    });
    let bus = &portal.buses()[def.bus].name;
    tracing::info!(target = %def.name, bus = %bus, tpgt = def.tpgt, luns = def.luns.len(), "target added");
    portal.faults().record(format!(
        "target {} added on {bus} with {} LUN(s)",
        def.name,
        def.luns.len()
    ));
    Ok(def)
}

/// `target remove`: refused while sessions are logged in unless `force`,
/// which ends them first. Returns how many sessions ended.
pub async fn remove_target(
    portal: &Portal,
    name: &str,
    force: bool,
) -> Result<usize, ReconfigError> {
    let _turn = portal.registry().turn.lock().await;
    let (index, pt) = find_target(portal, Some(name))?;
    let name = pt.def.name.clone();
    if portal.targets().len() == 1 {
        return Err(ReconfigError::LastOne(format!(
            "{name} is the last target of the bus"
        )));
    }
    let count = portal.sessions_of(index, |_| true).len();
    if count > 0 && !force {
        return Err(ReconfigError::HasSessions {
            target: name,
            count,
        });
    }
    portal.remove_target(index);
    portal.registry().peers(pt.def.bus).remove(&pt.scsi);
    // Logins are refused from here on; sessions that completed their login
    // after the count above end too (there is no target left to serve).
    let ended = end_sessions(portal.sessions_of(index, |_| true)).await;
    for lu in pt.scsi.luns() {
        if let Err(e) = lu.sync().await {
            tracing::error!(target = %name, lun = lu.lun(), error = %e, "flushing a LUN of the removed target failed");
        }
        clear_offline(portal, &name, lu.lun());
    }
    tracing::info!(target = %name, force, sessions_ended = ended, "target removed");
    portal
        .faults()
        .record(format!("target {name} removed ({ended} session(s) ended)"));
    Ok(ended)
}

/// An ACL change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AclChange {
    Add,
    Remove,
}

/// What an ACL change did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AclChanged {
    pub target: String,
    /// The ACL now (empty: everyone is admitted).
    pub allowed_initiators: Vec<String>,
    /// Sessions ended because the ACL no longer admits their initiator.
    pub sessions_ended: usize,
}

/// `acl add|remove`: changes target `target`'s `allowed_initiators`.
/// Sessions of initiators it no longer admits end unless `keep_sessions`.
pub async fn change_acl(
    portal: &Portal,
    target: Option<&str>,
    initiator: &str,
    change: AclChange,
    keep_sessions: bool,
) -> Result<AclChanged, ReconfigError> {
    let _turn = portal.registry().turn.lock().await;
    let (index, pt) = find_target(portal, target)?;
    let name = pt.def.name.clone();
    let who = config::acl_name(initiator)
        .map_err(|why| ReconfigError::BadRequest(format!("initiator {why}")))?;
    let listed = pt.def.allowed_initiators.contains(&who);
    match (change, listed) {
        (AclChange::Add, true) => {
            return Err(ReconfigError::Acl(format!(
                "{who} is in the ACL of {name} already"
            )))
        }
        (AclChange::Remove, false) => {
            return Err(ReconfigError::Acl(format!(
                "{who} is not in the ACL of {name}"
            )))
        }
        _ => {}
    }
    let def = portal
        .update_target(index, |d| match change {
            AclChange::Add => d.allowed_initiators.push(who.clone()),
            AclChange::Remove => d.allowed_initiators.retain(|a| *a != who),
        })
        .ok_or_else(|| ReconfigError::NoTarget(name.clone()))?;
    let sessions_ended = if keep_sessions {
        0
    } else {
        end_sessions(portal.sessions_of(index, |s| !def.admits(&s.initiator))).await
    };
    let verb = match change {
        AclChange::Add => "added to",
        AclChange::Remove => "removed from",
    };
    tracing::info!(target = %name, initiator = %who, acl = ?def.allowed_initiators, sessions_ended, "initiator {verb} the ACL");
    portal.faults().record(format!(
        "{who} {verb} the ACL of {name}{}",
        if sessions_ended > 0 {
            format!(" ({sessions_ended} session(s) ended)")
        } else {
            String::new()
        }
    ));
    Ok(AclChanged {
        target: name,
        allowed_initiators: def.allowed_initiators,
        sessions_ended,
    })
}

/// `chap set` (with credentials) or `chap clear` (`None`): target
/// `target`'s CHAP settings for new logins.
pub async fn set_chap(
    portal: &Portal,
    target: Option<&str>,
    chap: Option<&ChapConfig>,
) -> Result<String, ReconfigError> {
    let _turn = portal.registry().turn.lock().await;
    let (index, pt) = find_target(portal, target)?;
    let name = pt.def.name.clone();
    let spec = match chap {
        None => None,
        Some(c) => Some(config::validate_chap(&name, c)?),
    };
    if let Some(s) = &spec {
        warn_weak_chap(&name, s);
    }
    let mutual = spec.as_ref().is_some_and(|s| s.mutual.is_some());
    let on = spec.is_some();
    portal.update_target(index, |d| d.chap = spec);
    let what = match (on, mutual) {
        (false, _) => "CHAP cleared",
        (true, false) => "CHAP set",
        (true, true) => "mutual CHAP set",
    };
    tracing::info!(target = %name, "{what} for new logins");
    portal.faults().record(format!("{what} on {name}"));
    Ok(name)
}

/// The configuration the bus runs now: what `busrig target --config`
/// would have to read to start this bus.
pub async fn running_config(portal: &Portal) -> ValidConfig {
    // Between changes, so the LU tables and the definitions agree.
    let _turn = portal.registry().turn.lock().await;
    ValidConfig {
        buses: portal.buses().to_vec(),
        targets: portal.targets().iter().map(|t| t.def.clone()).collect(),
        iscsi: portal.tuning().clone(),
        data_dir: portal.registry().data_dir.clone(),
    }
}
