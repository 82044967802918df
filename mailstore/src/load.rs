//! The SMTP load generator behind `busrig mailload`: delivers messages to
//! a mail store at a fixed rate, keeps delivering across a failover
//! (reconnecting, resolving the network name again, retrying the
//! unacknowledged message with the same Message-ID), then lists every
//! mailbox and checks that every acknowledged message is there exactly
//! once. The protocol it speaks is in docs/mailstore.md.
//!
//! Where to start: [`run`] with a [`LoadConfig`]; it returns the
//! [`Report`] and the [`AckRecord`] of every acknowledged message.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::num::ParseIntError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Why a load run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The rate is not a positive, finite number of messages per second.
    #[error("--rate must be a positive number of messages per second")]
    Rate,
    /// No mailbox or no connection was asked for.
    #[error("--mailboxes and --connections must be at least 1")]
    Count,
    /// The port of the destination is not a number.
    #[error("bad port in --to {to}")]
    Port {
        to: String,
        #[source]
        source: ParseIntError,
    },
    /// A socket or name lookup failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The host name has no address.
    #[error("{0} resolves to nothing")]
    NoAddress(String),
    /// No cluster node could resolve the network name.
    #[error("cannot resolve {host}: {errors}")]
    Resolve { host: String, errors: String },
    /// The TCP connection was not established in time.
    #[error("connect to {0} timed out")]
    ConnectTimeout(SocketAddr),
    /// The store did not answer in time.
    #[error("no reply within {0:?}")]
    ReplyTimeout(Duration),
    /// The store greeted with something other than 220.
    #[error("greeting {code} {text}")]
    Greeting { code: u16, text: String },
    /// The store refused EHLO.
    #[error("EHLO answered {code} {text}")]
    Ehlo { code: u16, text: String },
    /// The store closed the connection.
    #[error("connection closed")]
    Closed,
    /// A reply line too short to hold a code.
    #[error("bad reply line {0:?}")]
    BadLine(String),
    /// A reply line whose code is not a number.
    #[error("bad reply {line:?}")]
    BadCode {
        line: String,
        #[source]
        source: ParseIntError,
    },
    /// XLIST was refused.
    #[error("XLIST {mailbox}: {code} {text}")]
    List {
        mailbox: String,
        code: u16,
        text: String,
    },
    /// An XLIST line that is not `uid size Message-ID`.
    #[error("bad XLIST line {0:?}")]
    BadListLine(String),
    /// XFETCH was refused.
    #[error("XFETCH: {code} {text}")]
    Fetch { code: u16, text: String },
    /// An XFETCH reply without a size.
    #[error("bad XFETCH reply {0}")]
    BadFetch(String),
    /// Listing the mailboxes failed until the deadline.
    #[error("cannot list the mailboxes")]
    Listing(#[source] Box<LoadError>),
    /// A worker task panicked.
    #[error("a mailload worker panicked")]
    Worker(#[source] tokio::task::JoinError),
}

/// What to send where.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    /// HOST:PORT, or NAME:PORT with a cluster network name resolved
    /// through `admin` on every reconnect.
    pub to: String,
    /// Cluster nodes' admin addresses to resolve `to` through.
    pub admin: Vec<String>,
    /// The cluster's admin secret.
    pub secret: Option<String>,
    /// Messages per second (an open-loop schedule).
    pub rate: f64,
    /// How long to send.
    pub duration: Duration,
    /// How long after `duration` to keep retrying unacknowledged messages.
    pub drain: Duration,
    /// Mailboxes the messages are spread over (user0, user1, ...).
    pub mailboxes: u32,
    /// Concurrent SMTP connections.
    pub connections: u32,
    /// Approximate message size in bytes.
    pub size: usize,
}

impl LoadConfig {
    /// Checks the rate, the counts and the destination.
    pub fn validate(&self) -> Result<(), LoadError> {
        if !(self.rate > 0.0 && self.rate.is_finite()) {
            return Err(LoadError::Rate);
        }
        if self.mailboxes == 0 || self.connections == 0 {
            return Err(LoadError::Count);
        }
        Dest::parse(&self.to).map(|_| ())
    }
}

/// What a run saw.
#[derive(Debug)]
pub struct LoadOutcome {
    pub report: Report,
    /// Every acknowledged message, in sequence order.
    pub acks: Vec<AckRecord>,
}

/// Where the store is.
#[derive(Debug, Clone)]
enum Dest {
    Addr(SocketAddr),
    Name { host: String, port: u16 },
}

/// Finds the store's address, again on every reconnect.
struct Resolver {
    dest: Dest,
    admin: Vec<String>,
    secret: Option<String>,
}

impl Dest {
    fn parse(to: &str) -> Result<Dest, LoadError> {
        Ok(match to.parse::<SocketAddr>() {
            Ok(s) => Dest::Addr(s),
            Err(_) => {
                let (host, port) = match to.rsplit_once(':') {
                    Some((h, p)) => (
                        h.to_string(),
                        p.parse().map_err(|source| LoadError::Port {
                            to: to.to_string(),
                            source,
                        })?,
                    ),
                    None => (to.to_string(), 25),
                };
                Dest::Name { host, port }
            }
        })
    }
}

impl Resolver {
    fn new(c: &LoadConfig) -> Result<Resolver, LoadError> {
        Ok(Resolver {
            dest: Dest::parse(&c.to)?,
            admin: c.admin.clone(),
            secret: c.secret.clone(),
        })
    }

    async fn resolve(&self) -> Result<SocketAddr, LoadError> {
        let (host, port) = match &self.dest {
            Dest::Addr(a) => return Ok(*a),
            Dest::Name { host, port } => (host, *port),
        };
        if self.admin.is_empty() {
            return tokio::net::lookup_host((host.as_str(), port))
                .await?
                .next()
                .ok_or_else(|| LoadError::NoAddress(host.clone()));
        }
        let path = format!("/resolve?name={}", escape(host));
        let mut errors = Vec::new();
        for node in &self.admin {
            match busrig_cluster::admin::request(node, "GET", &path, None, self.secret.as_deref())
                .await
            {
                Ok(v) => {
                    let a = v["address"].as_str().unwrap_or_default();
                    if let Ok(s) = a.parse::<SocketAddr>() {
                        return Ok(s);
                    }
                    if let Ok(ip) = a.parse::<std::net::IpAddr>() {
                        return Ok(SocketAddr::new(ip, port));
                    }
                    errors.push(format!("{node}: unusable address {a:?}"));
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        Err(LoadError::Resolve {
            host: host.clone(),
            errors: errors.join("; "),
        })
    }
}

fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Why one delivery attempt did not get a 250.
#[derive(Debug)]
enum Attempt {
    /// 5xx: the store refuses this message; retrying will not help.
    Permanent(String),
    /// Connection trouble or 4xx: reconnect and send it again.
    Transient(String),
}

/// An SMTP client connection.
struct Client {
    r: BufReader<tokio::net::tcp::OwnedReadHalf>,
    w: tokio::net::tcp::OwnedWriteHalf,
}

const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

impl Client {
    async fn connect(addr: SocketAddr) -> Result<Client, LoadError> {
        let s = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr))
            .await
            .map_err(|_| LoadError::ConnectTimeout(addr))??;
        s.set_nodelay(true)?;
        let (r, w) = s.into_split();
        let mut c = Client {
            r: BufReader::new(r),
            w,
        };
        let (code, text) = c.reply().await?;
        if code != 220 {
            return Err(LoadError::Greeting { code, text });
        }
        let (code, text) = c.command("EHLO mailload").await?;
        if code != 250 {
            return Err(LoadError::Ehlo { code, text });
        }
        Ok(c)
    }

    /// Reads one (possibly multi-line) reply: the code and every line's text.
    async fn reply_lines(&mut self) -> Result<(u16, Vec<String>), LoadError> {
        let mut lines = Vec::new();
        loop {
            let mut l = String::new();
            let n = tokio::time::timeout(REPLY_TIMEOUT, self.r.read_line(&mut l))
                .await
                .map_err(|_| LoadError::ReplyTimeout(REPLY_TIMEOUT))??;
            if n == 0 {
                return Err(LoadError::Closed);
            }
            let l = l.trim_end();
            if l.len() < 3 {
                return Err(LoadError::BadLine(l.to_string()));
            }
            let code: u16 = l[..3].parse().map_err(|source| LoadError::BadCode {
                line: l.to_string(),
                source,
            })?;
            lines.push(l.get(4..).unwrap_or("").to_string());
            if l.as_bytes().get(3) != Some(&b'-') {
                return Ok((code, lines));
            }
        }
    }

    async fn reply(&mut self) -> Result<(u16, String), LoadError> {
        let (code, lines) = self.reply_lines().await?;
        Ok((code, lines.join(" / ")))
    }

    async fn command(&mut self, line: &str) -> Result<(u16, String), LoadError> {
        self.w.write_all(format!("{line}\r\n").as_bytes()).await?;
        self.reply().await
    }

    /// One mail transaction; the uid on 250.
    async fn deliver(&mut self, mailbox: &str, body: &str) -> Result<u64, Attempt> {
        let t = |e: LoadError| Attempt::Transient(e.to_string());
        let check = |step: &str, (code, text): (u16, String), want: u16| match code {
            c if c == want => Ok(text),
            c if (400..500).contains(&c) => Err(Attempt::Transient(format!("{step}: {c} {text}"))),
            c => Err(Attempt::Permanent(format!("{step}: {c} {text}"))),
        };
        let r = self
            .command("MAIL FROM:<mailload@busrig>")
            .await
            .map_err(t)?;
        check("MAIL", r, 250)?;
        let r = self
            .command(&format!("RCPT TO:<{mailbox}@busrig>"))
            .await
            .map_err(t)?;
        check("RCPT", r, 250)?;
        let r = self.command("DATA").await.map_err(t)?;
        check("DATA", r, 354)?;
        let mut data = String::with_capacity(body.len() + 64);
        for line in body.split("\r\n") {
            if line.starts_with('.') {
                data.push('.');
            }
            data.push_str(line);
            data.push_str("\r\n");
        }
        data.push_str(".\r\n");
        self.w
            .write_all(data.as_bytes())
            .await
            .map_err(|e| t(e.into()))?;
        let r = self.reply().await.map_err(t)?;
        let text = check("end of DATA", r, 250)?;
        text.split_whitespace()
            .find_map(|w| w.strip_prefix("uid=")?.parse().ok())
            .ok_or_else(|| Attempt::Permanent(format!("250 without a uid: {text}")))
    }

    /// XLIST: (uid, Message-ID) of every message in the mailbox.
    async fn list(&mut self, mailbox: &str) -> Result<Vec<(u64, String)>, LoadError> {
        self.w
            .write_all(format!("XLIST {mailbox}\r\n").as_bytes())
            .await?;
        let (code, lines) = self.reply_lines().await?;
        if code != 250 {
            return Err(LoadError::List {
                mailbox: mailbox.to_string(),
                code,
                text: lines.join(" / "),
            });
        }
        let mut out = Vec::new();
        for l in &lines[..lines.len() - 1] {
            let mut it = l.split_whitespace();
            let uid = it.next().and_then(|u| u.parse().ok());
            let id = it.nth(1);
            match (uid, id) {
                (Some(u), Some(id)) => out.push((u, id.to_string())),
                _ => return Err(LoadError::BadListLine(l.to_string())),
            }
        }
        Ok(out)
    }

    #[allow(dead_code)]
    async fn fetch(&mut self, mailbox: &str, uid: u64) -> Result<Vec<u8>, LoadError> {
        self.w
            .write_all(format!("XFETCH {mailbox} {uid}\r\n").as_bytes())
            .await?;
        let (code, text) = self.reply().await?;
        if code != 250 {
            return Err(LoadError::Fetch { code, text });
        }
        let size: usize = text
            .split_whitespace()
            .nth(2)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| LoadError::BadFetch(text.clone()))?;
        let mut body = vec![0; size];
        self.r.read_exact(&mut body).await?;
        Ok(body)
    }
}

/// One acknowledged message.
#[derive(Debug, Clone, Serialize)]
pub struct AckRecord {
    pub seq: u64,
    pub message_id: String,
    pub mailbox: String,
    pub uid: u64,
    /// Unix milliseconds of the first attempt.
    pub send_unix_ms: u64,
    /// Unix milliseconds of the 250.
    pub ack_unix_ms: u64,
    pub attempts: u32,
}

#[derive(Default)]
struct Tally {
    acks: Vec<AckRecord>,
    /// Milliseconds since the start of the run of each ack.
    ack_offsets_ms: Vec<u64>,
    rejected: Vec<(u64, String)>,
    abandoned: Vec<u64>,
    reconnects: u64,
}

struct Run {
    resolver: Resolver,
    rate: f64,
    start: Instant,
    send_until: Instant,
    give_up_at: Instant,
    next: AtomicU64,
    run_id: String,
    mailboxes: u32,
    size: usize,
    tally: Mutex<Tally>,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Run {
    /// The tally; a worker that panicked holding it left it usable.
    fn tally(&self) -> MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn message(&self, seq: u64) -> (String, String, String) {
        let mailbox = format!("user{}", seq % self.mailboxes as u64);
        let id = format!("<mailload.{}.{seq}@busrig>", self.run_id);
        let mut body = format!(
            "Message-ID: {id}\r\nFrom: <mailload@busrig>\r\nTo: <{mailbox}@busrig>\r\n\
             Subject: mailload {seq}\r\n\r\n"
        );
        let mut n = 0;
        while body.len() < self.size {
            body.push_str(&format!(
                "line {n} of message {seq}: the quick brown fox\r\n"
            ));
            n += 1;
        }
        (mailbox, id, body)
    }

    async fn connect(&self) -> Result<Client, LoadError> {
        let addr = self.resolver.resolve().await?;
        Client::connect(addr).await
    }

    /// The longest pause between two delivery attempts. A client that
    /// backs off further would measure its own backoff rather than the
    /// virtual server's downtime (the demo's "longest gap").
    const MAX_BACKOFF: Duration = Duration::from_millis(200);

    async fn worker(self: Arc<Self>) {
        let mut client: Option<Client> = None;
        let mut backoff = Duration::from_millis(50);
        loop {
            let seq = self.next.fetch_add(1, Ordering::SeqCst);
            let due = self.start + Duration::from_secs_f64(seq as f64 / self.rate);
            if due >= self.send_until {
                break;
            }
            tokio::time::sleep_until(due.into()).await;
            let (mailbox, id, body) = self.message(seq);
            let send_unix_ms = unix_ms();
            let mut attempts = 0u32;
            loop {
                if Instant::now() >= self.give_up_at {
                    tracing::warn!(seq, "giving up on a message");
                    self.tally().abandoned.push(seq);
                    break;
                }
                let c = match client.as_mut() {
                    Some(c) => c,
                    None => match self.connect().await {
                        Ok(c) => client.insert(c),
                        Err(e) => {
                            tracing::info!(error = %e, "store unreachable; retrying");
                            tokio::time::sleep(backoff).await;
                            backoff = (backoff * 2).min(Self::MAX_BACKOFF);
                            continue;
                        }
                    },
                };
                attempts += 1;
                match c.deliver(&mailbox, &body).await {
                    Ok(uid) => {
                        backoff = Duration::from_millis(50);
                        let now = Instant::now();
                        let mut t = self.tally();
                        t.ack_offsets_ms
                            .push(now.duration_since(self.start).as_millis() as u64);
                        t.acks.push(AckRecord {
                            seq,
                            message_id: id.clone(),
                            mailbox: mailbox.clone(),
                            uid,
                            send_unix_ms,
                            ack_unix_ms: unix_ms(),
                            attempts,
                        });
                        break;
                    }
                    Err(Attempt::Permanent(e)) => {
                        tracing::warn!(seq, error = %e, "message refused");
                        self.tally().rejected.push((seq, e));
                        break;
                    }
                    Err(Attempt::Transient(e)) => {
                        tracing::info!(seq, error = %e, "delivery interrupted; reconnecting");
                        client = None;
                        self.tally().reconnects += 1;
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Self::MAX_BACKOFF);
                    }
                }
            }
        }
        if let Some(mut c) = client {
            let _ = c.command("QUIT").await;
        }
    }

    /// Lists every mailbox, retrying through a failover until `deadline`.
    async fn fetch_all(
        &self,
        deadline: Instant,
    ) -> Result<HashMap<String, Vec<String>>, LoadError> {
        let mut backoff = Duration::from_millis(100);
        loop {
            let attempt = async {
                let mut c = self.connect().await?;
                let mut all = HashMap::new();
                for k in 0..self.mailboxes {
                    let m = format!("user{k}");
                    let ids = c.list(&m).await?.into_iter().map(|(_, id)| id).collect();
                    all.insert(m, ids);
                }
                let _ = c.command("QUIT").await;
                Ok::<_, LoadError>(all)
            };
            match attempt.await {
                Ok(all) => return Ok(all),
                Err(e) if Instant::now() < deadline => {
                    tracing::info!(error = %e, "listing failed; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
                Err(e) => return Err(LoadError::Listing(Box::new(e))),
            }
        }
    }
}

/// The final report.
#[derive(Debug, Serialize)]
pub struct Report {
    pub sent: u64,
    pub acknowledged: u64,
    pub acknowledged_but_missing: u64,
    pub duplicates: u64,
    pub rejected: u64,
    pub unacknowledged: u64,
    pub reconnects: u64,
    pub longest_ack_gap_ms: u64,
    pub latency_ms: Latency,
    pub missing: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

/// The report as `busrig mailload` prints it: one counter per line, the
/// latency percentiles, and the first 20 missing messages.
impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(f, "sent                      {}", self.sent)?;
        writeln!(f, "acknowledged              {}", self.acknowledged)?;
        writeln!(
            f,
            "acknowledged but missing  {}",
            self.acknowledged_but_missing
        )?;
        writeln!(f, "duplicates                {}", self.duplicates)?;
        writeln!(f, "rejected (5xx)            {}", self.rejected)?;
        writeln!(f, "unacknowledged (gave up)  {}", self.unacknowledged)?;
        writeln!(f, "reconnects                {}", self.reconnects)?;
        writeln!(
            f,
            "longest gap without acks  {} ms",
            self.longest_ack_gap_ms
        )?;
        let l = &self.latency_ms;
        write!(
            f,
            "latency ms                p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
            l.p50, l.p90, l.p99, l.p999, l.max
        )?;
        self.missing
            .iter()
            .take(20)
            .try_for_each(|m| write!(f, "\nmissing {m}"))
    }
}

impl LoadOutcome {
    /// Writes every acknowledged message to `path`, one JSON object a line.
    pub fn write_records(&self, path: &std::path::Path) -> std::io::Result<()> {
        let mut text = String::new();
        for r in &self.acks {
            text.push_str(&serde_json::to_string(r).map_err(std::io::Error::other)?);
            text.push('\n');
        }
        std::fs::write(path, text)
    }
}

/// Parses `30s`, `500ms`, `2m`, `1h` or a plain number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("bad duration {s:?} (e.g. 30s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("bad duration unit in {s:?}: ms, s, m or h")),
    };
    if !secs.is_finite() || secs < 0.0 {
        return Err(format!("bad duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The longest stretch without an ack, from the start through the last ack.
fn longest_gap(offsets: &mut [u64]) -> u64 {
    offsets.sort_unstable();
    let mut prev = 0;
    let mut gap = 0;
    for &o in offsets.iter() {
        gap = gap.max(o - prev);
        prev = o;
    }
    gap
}

/// Sends for `duration` (and retries for up to `drain` more), then lists
/// every mailbox and reports what is there.
pub async fn run(c: LoadConfig) -> Result<LoadOutcome, LoadError> {
    c.validate()?;
    let start = Instant::now();
    let run = Arc::new(Run {
        resolver: Resolver::new(&c)?,
        rate: c.rate,
        start,
        send_until: start + c.duration,
        give_up_at: start + c.duration + c.drain,
        next: AtomicU64::new(0),
        run_id: format!("{:08x}", rand::random::<u32>()),
        mailboxes: c.mailboxes,
        size: c.size,
        tally: Mutex::new(Tally::default()),
    });
    tracing::info!(to = %c.to, rate = c.rate, duration = ?c.duration, run = %run.run_id, "mailload starts");
    let workers: Vec<_> = (0..c.connections)
        .map(|_| tokio::spawn(run.clone().worker()))
        .collect();
    for w in workers {
        w.await.map_err(LoadError::Worker)?;
    }
    let listed = run
        .fetch_all(Instant::now() + c.drain.max(Duration::from_secs(10)))
        .await?;
    let mut t = std::mem::take(&mut *run.tally());
    let sent = (t.acks.len() + t.rejected.len() + t.abandoned.len()) as u64;
    let report = report(sent, &mut t, &listed, &run.run_id);
    t.acks.sort_by_key(|r| r.seq);
    Ok(LoadOutcome {
        report,
        acks: t.acks,
    })
}

fn report(sent: u64, t: &mut Tally, listed: &HashMap<String, Vec<String>>, run_id: &str) -> Report {
    let prefix = format!("<mailload.{run_id}.");
    let mut seen: HashMap<(&str, &str), u64> = HashMap::new();
    for (mailbox, ids) in listed {
        for id in ids.iter().filter(|i| i.starts_with(&prefix)) {
            *seen.entry((mailbox.as_str(), id.as_str())).or_default() += 1;
        }
    }
    let duplicates = seen.values().map(|n| n - 1).sum();
    let missing: Vec<String> = t
        .acks
        .iter()
        .filter(|r| !seen.contains_key(&(r.mailbox.as_str(), r.message_id.as_str())))
        .map(|r| r.message_id.clone())
        .collect();
    let mut h = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("histogram bounds");
    for r in &t.acks {
        let us = r.ack_unix_ms.saturating_sub(r.send_unix_ms).max(1) * 1000;
        let _ = h.record(us.min(3_600_000_000));
    }
    let q = |x: f64| {
        if h.is_empty() {
            0.0
        } else {
            h.value_at_quantile(x) as f64 / 1000.0
        }
    };
    Report {
        sent,
        acknowledged: t.acks.len() as u64,
        acknowledged_but_missing: missing.len() as u64,
        duplicates,
        rejected: t.rejected.len() as u64,
        unacknowledged: t.abandoned.len() as u64,
        reconnects: t.reconnects,
        longest_ack_gap_ms: longest_gap(&mut t.ack_offsets_ms),
        latency_ms: Latency {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p999: q(0.999),
            max: if h.is_empty() {
                0.0
            } else {
                h.max() as f64 / 1000.0
            },
        },
        missing,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_and_report() {
        assert_eq!(longest_gap(&mut [300, 100, 1200, 1300]), 900);
        assert_eq!(longest_gap(&mut []), 0);
        let ack = |seq: u64, mailbox: &str| AckRecord {
            seq,
            message_id: format!("<mailload.r.{seq}@busrig>"),
            mailbox: mailbox.into(),
            uid: seq,
            send_unix_ms: 1000,
            ack_unix_ms: 1010,
            attempts: 1,
        };
        let mut t = Tally {
            acks: vec![ack(1, "user0"), ack(2, "user1"), ack(3, "user0")],
            ack_offsets_ms: vec![10, 20, 30],
            ..Tally::default()
        };
        let listed = HashMap::from([
            (
                "user0".to_string(),
                vec![
                    "<mailload.r.1@busrig>".to_string(),
                    "<mailload.r.1@busrig>".to_string(),
                    "<other>".to_string(),
                ],
            ),
            (
                "user1".to_string(),
                vec!["<mailload.r.2@busrig>".to_string()],
            ),
        ]);
        let r = report(3, &mut t, &listed, "r");
        assert_eq!(r.acknowledged, 3);
        assert_eq!(r.acknowledged_but_missing, 1);
        assert_eq!(r.missing, vec!["<mailload.r.3@busrig>".to_string()]);
        assert_eq!(r.duplicates, 1);
        assert!((r.latency_ms.p50 - 10.0).abs() < 0.1);
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3x").is_err());
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn the_report_reads_as_a_table() {
        let r = Report {
            sent: 10,
            acknowledged: 9,
            acknowledged_but_missing: 1,
            duplicates: 0,
            rejected: 0,
            unacknowledged: 1,
            reconnects: 2,
            longest_ack_gap_ms: 1500,
            latency_ms: Latency {
                p50: 1.0,
                p90: 2.0,
                p99: 3.0,
                p999: 4.0,
                max: 5.0,
            },
            missing: vec!["<m7@load>".into()],
        };
        let text = r.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "sent                      10");
        assert_eq!(lines[7], "longest gap without acks  1500 ms");
        assert_eq!(
            lines[8],
            "latency ms                p50 1.0  p90 2.0  p99 3.0  p99.9 4.0  max 5.0"
        );
        assert_eq!(lines[9], "missing <m7@load>");
        assert_eq!(lines.len(), 10);
    }
}
