//! The public session handle: log in, run requests with time limits, and
//! recover when the connection drops.
//!
//! ```text
//!   Up ──connection lost──► Recovering ──login again (same name + ISID)──► Up (replay)
//!    │                          │
//!    │                          └──recovery_timeout passes / login refused──► Lost
//!    └──logout / last handle dropped──► Closed
//! ```
//!
//! Recovery is session reinstatement (RFC 7143 §6.3.5): a new leading login
//! with the same InitiatorName and ISID and TSIH 0, after DefaultTime2Wait
//! (§13.15). The target ends the old session, the I_T nexus stays the same
//! so persistent reservation registrations stay (SPC-4 §5.9.5), and every
//! request the target never answered is sent again.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use busrig_proto::negotiation::{DigestType, SessionParams};
use busrig_proto::pdu::{tmf, Pdu, WireConfig};
use bytes::{Bytes, BytesMut};
use serde::Serialize;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::config::{Isid, SessionConfig};
use crate::connection::{self, Connection, ConnectionEvents};
use crate::engine::{Answer, Engine, Event, Limits, Request, ScsiOutcome, TaskAttr};
use crate::error::Error;
use crate::login::{LoggedIn, Login, LoginStep};
use crate::scsi::Command;
use crate::url::IscsiUrl;

/// How many login redirections (status class 1) we follow.
const MAX_REDIRECTS: u32 = 4;

/// What was negotiated, for display and JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionInfo {
    pub initiator_name: String,
    pub isid: String,
    pub target_name: Option<String>,
    pub portal: String,
    pub tsih: u16,
    pub target_portal_group_tag: Option<u16>,
    pub header_digest: bool,
    pub data_digest: bool,
    /// What we accept per PDU, and what the target accepts.
    pub max_recv_data_segment_length: u32,
    pub max_xmit_data_segment_length: u32,
    pub max_burst_length: u32,
    pub first_burst_length: u32,
    pub immediate_data: bool,
    pub initial_r2t: bool,
    pub max_outstanding_r2t: u16,
    pub default_time2wait: u16,
    pub default_time2retain: u16,
    /// How many times the session was reinstated after a connection loss.
    pub reconnects: u32,
}

impl SessionInfo {
    fn new(cfg: &SessionConfig, target: Option<&str>, portal: &str, l: &LoggedIn) -> SessionInfo {
        let p = &l.params;
        SessionInfo {
            initiator_name: cfg.initiator_name.clone(),
            isid: cfg.isid.to_string(),
            target_name: target.map(str::to_string),
            portal: portal.to_string(),
            tsih: l.tsih,
            target_portal_group_tag: p.target_portal_group_tag,
            header_digest: p.header_digest == DigestType::Crc32c,
            data_digest: p.data_digest == DigestType::Crc32c,
            max_recv_data_segment_length: p.local_max_recv_data_segment_length,
            max_xmit_data_segment_length: p.peer_max_recv_data_segment_length,
            max_burst_length: p.max_burst_length,
            first_burst_length: p.first_burst_length,
            immediate_data: p.immediate_data,
            initial_r2t: p.initial_r2t,
            max_outstanding_r2t: p.max_outstanding_r2t,
            default_time2wait: p.default_time2wait,
            default_time2retain: p.default_time2retain,
            reconnects: 0,
        }
    }
}

fn limits(p: &SessionParams) -> Limits {
    Limits {
        max_xmit_data_segment_length: p.peer_max_recv_data_segment_length,
        first_burst_length: p.first_burst_length,
        max_burst_length: p.max_burst_length,
        immediate_data: p.immediate_data,
        initial_r2t: p.initial_r2t,
    }
}

fn wire(p: &SessionParams) -> WireConfig {
    WireConfig {
        header_digest: p.header_digest == DigestType::Crc32c,
        data_digest: p.data_digest == DigestType::Crc32c,
        max_recv_data_segment_length: p.local_max_recv_data_segment_length,
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Phase {
    Up,
    /// Our Logout Request is out: the target will close the connection,
    /// and that is no reason to recover.
    LoggingOut,
    Recovering,
    Lost(String),
    Closed,
}

struct State {
    engine: Engine,
    waiters: HashMap<u32, oneshot::Sender<Result<Answer, Error>>>,
    conn: Option<Connection>,
    generation: u64,
    phase: Phase,
    info: SessionInfo,
    events: VecDeque<Event>,
    recovery: Option<JoinHandle<()>>,
    /// Idle periods in a row with nothing from the target.
    idle_strikes: u32,
    /// The target asked us to log out (AsyncEvent 1): reinstate the session.
    reinstate: bool,
}

impl State {
    /// Moves what the engine produced to the wire, the waiters and the event queue.
    fn flush(&mut self) {
        if let Some(c) = &self.conn {
            while let Some(p) = self.engine.poll_transmit() {
                if c.tx.send(p).is_err() {
                    break;
                }
            }
        }
        while let Some((itt, r)) = self.engine.poll_completion() {
            if let Some(w) = self.waiters.remove(&itt) {
                let _ = w.send(r);
            }
        }
        while let Some(ev) = self.engine.poll_event() {
            tracing::info!(?ev, "asynchronous message from the target");
            if matches!(ev, Event::LogoutRequested { .. }) {
                self.reinstate = true;
            }
            self.events.push_back(ev);
        }
    }

    fn fail_everything(&mut self, msg: &str) {
        let m = msg.to_string();
        self.engine.fail_all(|| Error::SessionLost(m.clone()));
        self.flush();
        // Waiters whose tasks the engine already forgot still hear why.
        for (_, w) in self.waiters.drain() {
            let _ = w.send(Err(Error::SessionLost(msg.to_string())));
        }
    }
}

/// State shared by the handle, the connection tasks and recovery.
pub struct Shared {
    config: SessionConfig,
    target: Option<String>,
    portal: Mutex<String>,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves engine state we cannot
        // trust; other users see the poisoned state and fail loudly.
        self.state.lock().expect("session state lock poisoned")
    }
}

impl ConnectionEvents for Shared {
    /// Called by the reader for every PDU of connection `generation`.
    fn on_pdu(&self, generation: u64, p: Pdu) -> Result<(), Error> {
        let mut st = self.lock();
        if st.generation != generation {
            return Ok(());
        }
        st.idle_strikes = 0;
        let r = st.engine.handle(p);
        st.flush();
        if std::mem::take(&mut st.reinstate) {
            return Err(Error::Protocol(
                "the target asked us to log out; reinstating the session".into(),
            ));
        }
        r
    }

    /// Called by the reader when nothing arrived for `interval`: ping the
    /// target (RFC 7143 §11.18), and give up on the connection when a
    /// whole further interval passes without an answer.
    fn on_idle(&self, generation: u64, interval: Duration) -> Result<(), Error> {
        let mut st = self.lock();
        if st.generation != generation {
            return Ok(());
        }
        st.idle_strikes += 1;
        if st.idle_strikes >= 2 {
            return Err(Error::Timeout {
                what: "NOP-Out ping",
                after: interval,
            });
        }
        st.engine.submit(Request::Ping);
        st.flush();
        Ok(())
    }

    /// Called by either connection task when the connection broke.
    fn connection_failed(self: &Arc<Self>, generation: u64, err: Error) {
        let mut st = self.lock();
        if st.generation != generation || st.conn.is_none() {
            return;
        }
        if let Some(c) = st.conn.take() {
            c.shut_down();
        }
        st.engine.connection_lost();
        st.flush();
        if st.phase != Phase::Up {
            return;
        }
        tracing::warn!(error = %err, target = ?self.target, "iSCSI connection lost");
        if self.config.recovery_timeout.is_zero() || self.target.is_none() {
            let msg = format!("connection lost: {err}");
            st.phase = Phase::Lost(msg.clone());
            st.fail_everything(&msg);
            return;
        }
        st.phase = Phase::Recovering;
        let wait = Duration::from_secs(st.info.default_time2wait as u64);
        let me = self.clone();
        st.recovery = Some(tokio::spawn(async move {
            me.recover(err.to_string(), wait).await
        }));
    }
}

impl Shared {
    /// Dials, follows redirections and logs in; returns the logged-in
    /// stream with any bytes read past the login.
    async fn establish(
        &self,
        cmd_sn: u32,
    ) -> Result<(tokio::net::TcpStream, BytesMut, LoggedIn, String), Error> {
        let cfg = &self.config;
        let mut addr = self.portal.lock().expect("portal lock").clone();
        let deadline = cfg.login_timeout;
        let attempt = async {
            for _ in 0..=MAX_REDIRECTS {
                let mut s = connection::dial(&addr, deadline).await?;
                let mut buf = BytesMut::with_capacity(64 * 1024);
                let login = Login::new(cfg, self.target.as_deref(), cmd_sn);
                match connection::login(&mut s, &mut buf, login).await? {
                    LoginStep::Done(l) => return Ok((s, buf, l, addr)),
                    LoginStep::Redirect { address, permanent } => {
                        tracing::info!(%address, permanent, "login redirected");
                        if permanent {
                            *self.portal.lock().expect("portal lock") = address.clone();
                        }
                        addr = address;
                    }
                    LoginStep::Send(_) => {
                        unreachable!("connection::login returns only final steps")
                    }
                }
            }
            Err(Error::Protocol(format!(
                "more than {MAX_REDIRECTS} login redirections"
            )))
        };
        tokio::time::timeout(deadline, attempt)
            .await
            .map_err(|_| Error::Timeout {
                what: "login",
                after: deadline,
            })?
    }

    fn install(
        self: &Arc<Self>,
        st: &mut State,
        stream: tokio::net::TcpStream,
        buf: BytesMut,
        l: &LoggedIn,
    ) {
        st.generation += 1;
        st.idle_strikes = 0;
        let c = connection::spawn(
            stream,
            buf,
            wire(&l.params),
            self.clone(),
            st.generation,
            self.config.nop_interval,
        );
        st.conn = Some(c);
    }

    async fn recover(self: Arc<Self>, cause: String, wait: Duration) {
        let limit = self.config.recovery_timeout;
        let deadline = Instant::now() + limit;
        tokio::time::sleep(wait.min(limit)).await;
        let mut last;
        loop {
            match self.establish(1).await {
                Ok((stream, buf, l, addr)) => {
                    let mut st = self.lock();
                    if st.phase != Phase::Recovering {
                        return;
                    }
                    let reconnects = st.info.reconnects + 1;
                    st.info = SessionInfo::new(&self.config, self.target.as_deref(), &addr, &l);
                    st.info.reconnects = reconnects;
                    self.install(&mut st, stream, buf, &l);
                    st.engine.resume(limits(&l.params), l.sn);
                    st.phase = Phase::Up;
                    tracing::info!(
                        outstanding = st.engine.outstanding(),
                        reconnects,
                        "iSCSI session reinstated"
                    );
                    st.flush();
                    return;
                }
                // A refusal for a reason that will not change (bad
                // credentials, unknown target) ends recovery at once.
                Err(e @ (Error::Authentication(_) | Error::LoginRefused { class: 0x02, .. })) => {
                    last = e.to_string();
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "reconnect attempt failed");
                    last = e.to_string();
                }
            }
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1).min(deadline - now)).await;
        }
        let msg = format!(
            "connection lost ({cause}) and could not log in again within {limit:?}: {last}"
        );
        tracing::error!("{msg}");
        let mut st = self.lock();
        if st.phase == Phase::Recovering {
            st.phase = Phase::Lost(msg.clone());
            st.fail_everything(&msg);
        }
    }

    fn close_now(&self, why: &str) {
        let mut st = self.lock();
        if st.phase == Phase::Closed {
            return;
        }
        st.phase = Phase::Closed;
        if let Some(r) = st.recovery.take() {
            r.abort();
        }
        if let Some(c) = st.conn.take() {
            c.shut_down();
        }
        st.engine.connection_lost();
        st.fail_everything(why);
    }
}

/// Closes the session when the last [`Session`] clone goes away; the
/// connection tasks hold only [`Shared`], so without this they would keep
/// each other alive.
struct CloseGuard(Arc<Shared>);

impl Drop for CloseGuard {
    fn drop(&mut self) {
        self.0.close_now("session dropped");
    }
}

/// A command on its way, with the tag an ABORT TASK can name.
pub struct PendingTask {
    itt: u32,
    lun: u64,
    rx: oneshot::Receiver<Result<Answer, Error>>,
    session: Session,
    limit: Duration,
    /// The time limit counts from submission, not from the first poll.
    deadline: Instant,
}

impl PendingTask {
    /// The Initiator Task Tag.
    pub fn tag(&self) -> u32 {
        self.itt
    }

    /// Waits for the answer until the command timeout (counted from
    /// [`Session::start`]) runs out. On timeout the
    /// task is forgotten and an ABORT TASK is sent for it (SAM-5 §7.2) so
    /// the target does not keep running it.
    pub async fn wait(self) -> Result<Answer, Error> {
        match tokio::time::timeout_at(self.deadline, self.rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::SessionLost(
                "the session ended before the answer".into(),
            )),
            Err(_) => {
                let mut st = self.session.shared.lock();
                st.waiters.remove(&self.itt);
                if let Some(c) = st.engine.cancel(self.itt) {
                    // Only a task the current connection carried can be
                    // named; after a reconnect the target never saw it.
                    if c.cmd_sn.is_some() && st.phase == Phase::Up {
                        st.engine.submit(Request::TaskMgmt {
                            function: tmf::ABORT_TASK,
                            lun: self.lun,
                            referenced: Some(self.itt),
                            ref_cmd_sn: c.cmd_sn,
                        });
                        st.flush();
                    }
                }
                Err(Error::Timeout {
                    what: "command",
                    after: self.limit,
                })
            }
        }
    }
}

/// A logged-in iSCSI session (normal or discovery). Clones share it.
#[derive(Clone)]
pub struct Session {
    shared: Arc<Shared>,
    _guard: Arc<CloseGuard>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("info", &self.info())
            .finish()
    }
}

impl Session {
    /// Logs in to the target and portal a URL names (its credentials and
    /// digest choices override `config`'s).
    pub async fn open(url: &IscsiUrl, config: SessionConfig) -> Result<Session, Error> {
        let target = url
            .target
            .clone()
            .ok_or_else(|| Error::InvalidRequest("the URL names no target".into()))?;
        Session::connect(
            &url.portal.socket_addr_string(),
            Some(&target),
            config.with_url(url),
        )
        .await
    }

    /// Logs in to `portal` (`host:port`): a normal session with `target`,
    /// or a discovery session with `None`.
    pub async fn connect(
        portal: &str,
        target: Option<&str>,
        config: SessionConfig,
    ) -> Result<Session, Error> {
        let initial = crate::engine::SeqNumbers {
            cmd_sn: 1,
            exp_cmd_sn: 1,
            max_cmd_sn: 1,
            exp_stat_sn: 0,
        };
        let info = SessionInfo {
            initiator_name: config.initiator_name.clone(),
            isid: config.isid.to_string(),
            target_name: target.map(str::to_string),
            portal: portal.to_string(),
            tsih: 0,
            target_portal_group_tag: None,
            header_digest: false,
            data_digest: false,
            max_recv_data_segment_length: 8192,
            max_xmit_data_segment_length: 8192,
            max_burst_length: 0,
            first_burst_length: 0,
            immediate_data: false,
            initial_r2t: true,
            max_outstanding_r2t: 1,
            default_time2wait: 2,
            default_time2retain: 20,
            reconnects: 0,
        };
        let shared = Arc::new(Shared {
            config,
            target: target.map(str::to_string),
            portal: Mutex::new(portal.to_string()),
            state: Mutex::new(State {
                engine: Engine::new(Limits::default(), initial),
                waiters: HashMap::new(),
                conn: None,
                generation: 0,
                phase: Phase::Closed,
                info,
                events: VecDeque::new(),
                recovery: None,
                idle_strikes: 0,
                reinstate: false,
            }),
        });
        let (stream, buf, l, addr) = shared.establish(1).await?;
        {
            let mut st = shared.lock();
            st.info = SessionInfo::new(&shared.config, target, &addr, &l);
            st.engine = Engine::new(limits(&l.params), l.sn);
            st.phase = Phase::Up;
            shared.install(&mut st, stream, buf, &l);
        }
        tracing::debug!(portal = %addr, ?target, "iSCSI login complete");
        Ok(Session {
            _guard: Arc::new(CloseGuard(shared.clone())),
            shared,
        })
    }

    /// What was negotiated.
    pub fn info(&self) -> SessionInfo {
        self.shared.lock().info.clone()
    }

    pub fn config(&self) -> &SessionConfig {
        &self.shared.config
    }

    pub fn isid(&self) -> Isid {
        self.shared.config.isid
    }

    /// Asynchronous events received so far (and forgets them).
    pub fn take_events(&self) -> Vec<Event> {
        self.shared.lock().events.drain(..).collect()
    }

    /// Whether the session is logged in right now (not recovering, lost or closed).
    pub fn is_up(&self) -> bool {
        self.shared.lock().phase == Phase::Up
    }

    /// Queues a request and returns its handle; see [`PendingTask::wait`].
    pub fn start(&self, req: Request, limit: Duration) -> Result<PendingTask, Error> {
        let lun = match &req {
            Request::Scsi { lun, .. } | Request::TaskMgmt { lun, .. } => *lun,
            _ => 0,
        };
        let (tx, rx) = oneshot::channel();
        let mut st = self.shared.lock();
        match &st.phase {
            Phase::Up | Phase::Recovering => {}
            Phase::Lost(m) => return Err(Error::SessionLost(m.clone())),
            Phase::LoggingOut | Phase::Closed => {
                return Err(Error::SessionLost("session closed".into()))
            }
        }
        if matches!(req, Request::Logout { .. }) && st.phase == Phase::Up {
            // Set before the request can reach the wire: the target closes
            // the connection right after its Logout Response.
            st.phase = Phase::LoggingOut;
        }
        let itt = st.engine.submit(req);
        st.waiters.insert(itt, tx);
        st.flush();
        Ok(PendingTask {
            itt,
            lun,
            rx,
            session: self.clone(),
            limit,
            deadline: Instant::now() + limit,
        })
    }

    /// Runs a request with the configured command timeout.
    pub async fn request(&self, req: Request) -> Result<Answer, Error> {
        self.start(req, self.shared.config.command_timeout)?
            .wait()
            .await
    }

    /// Starts a SCSI command (simple task attribute) and returns its handle.
    pub fn start_command(&self, lun: u64, cdb: Command) -> Result<PendingTask, Error> {
        self.start(
            Request::Scsi {
                lun,
                cdb,
                attr: TaskAttr::Simple,
            },
            self.shared.config.command_timeout,
        )
    }

    /// Runs a SCSI command and returns its full outcome, whatever the status.
    pub async fn command(&self, lun: u64, cdb: Command) -> Result<ScsiOutcome, Error> {
        match self.start_command(lun, cdb)?.wait().await? {
            Answer::Scsi(o) => Ok(o),
            other => Err(Error::Protocol(format!(
                "SCSI command answered with {other:?}"
            ))),
        }
    }

    /// Runs a SCSI command; GOOD gives the Data-In bytes, any other status an error.
    pub async fn execute(&self, lun: u64, cdb: Command) -> Result<Bytes, Error> {
        self.command(lun, cdb).await?.into_result()
    }

    /// Runs a task management function; anything but "function complete"
    /// is an error (RFC 7143 §11.6.1).
    pub async fn task_management(
        &self,
        function: u8,
        lun: u64,
        referenced: Option<u32>,
    ) -> Result<(), Error> {
        let name = match function {
            tmf::ABORT_TASK => "ABORT TASK",
            tmf::ABORT_TASK_SET => "ABORT TASK SET",
            tmf::CLEAR_ACA => "CLEAR ACA",
            tmf::CLEAR_TASK_SET => "CLEAR TASK SET",
            tmf::LOGICAL_UNIT_RESET => "LOGICAL UNIT RESET",
            tmf::TARGET_WARM_RESET => "TARGET WARM RESET",
            tmf::TARGET_COLD_RESET => "TARGET COLD RESET",
            _ => "task management function",
        };
        match self
            .request(Request::TaskMgmt {
                function,
                lun,
                referenced,
                ref_cmd_sn: None,
            })
            .await?
        {
            Answer::TaskMgmt(tmf::RESP_COMPLETE) => Ok(()),
            Answer::TaskMgmt(response) => Err(Error::TaskManagement {
                function: name,
                response,
            }),
            other => Err(Error::Protocol(format!("{name} answered with {other:?}"))),
        }
    }

    /// ABORT TASK for the command with tag `tag` on `lun` (RFC 7143 §11.5.1).
    pub async fn abort_task(&self, lun: u64, tag: u32) -> Result<(), Error> {
        self.task_management(tmf::ABORT_TASK, lun, Some(tag)).await
    }

    /// A NOP-Out ping; returns the round-trip time.
    pub async fn ping(&self) -> Result<Duration, Error> {
        let t0 = Instant::now();
        self.request(Request::Ping).await?;
        Ok(t0.elapsed())
    }

    /// Sends a Text Request and returns the (joined) response text.
    pub async fn text(&self, data: Bytes) -> Result<Bytes, Error> {
        match self.request(Request::Text { data }).await? {
            Answer::Text(t) => Ok(t),
            other => Err(Error::Protocol(format!(
                "text request answered with {other:?}"
            ))),
        }
    }

    /// Logs out (closing the session, RFC 7143 §11.14) and closes. The
    /// target forgets the session's SCSI-2 reservations with the nexus;
    /// persistent registrations stay.
    pub async fn logout(&self) -> Result<(), Error> {
        let up = self.is_up();
        let r = if up {
            let pending = self.start(
                Request::Logout { reason: 0 },
                self.shared.config.login_timeout,
            )?;
            match pending.wait().await {
                Ok(Answer::Logout { response: 0, .. }) => Ok(()),
                Ok(Answer::Logout { response, .. }) => Err(Error::Protocol(format!(
                    "logout answered with response {response}"
                ))),
                Ok(other) => Err(Error::Protocol(format!("logout answered with {other:?}"))),
                Err(e) => Err(e),
            }
        } else {
            Ok(())
        };
        self.shared.close_now("logged out");
        r
    }

    /// Drops the TCP connection without logging out, as a crash or a cable
    /// pull would; recovery then starts. For tests of session recovery.
    pub fn drop_connection(&self) {
        let generation = self.shared.lock().generation;
        self.shared.connection_failed(
            generation,
            Error::Io(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "connection dropped on request",
            )),
        );
    }
}
