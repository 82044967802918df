//! The mail store's protocol: a documented subset of SMTP (RFC 5321) for
//! delivery and two extension commands for retrieval. docs/mailstore.md
//! lists every command and reply.
//!
//! ```text
//! C: EHLO client           S: 250-busrig mailstore / 250-SIZE n / 250 8BITMIME
//! C: MAIL FROM:<a@x>       S: 250 2.1.0 OK
//! C: RCPT TO:<bob@x>       S: 250 2.1.5 OK           (mailbox "bob")
//! C: DATA                  S: 354 end data with <CR><LF>.<CR><LF>
//! C: ... .                 S: 250 2.0.0 OK uid=17    (only once durable)
//! C: XLIST bob             S: 250-17 523 <id@x> / 250 2.0.0 1 message(s) in bob
//! C: XFETCH bob 17         S: 250 2.0.0 17 523 <id@x>, then exactly 523 bytes
//! C: QUIT                  S: 221 2.0.0 bye
//! ```
//!
//! Parsing is pure ([`parse_command`], [`mailbox_of`], [`message_id_of`]);
//! [`serve_connection`] is generic over the stream (docs/architecture.md, convention 6).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

use crate::device::BlockDevice;
use crate::format::{MAX_MAILBOX, MAX_MESSAGE_ID, MAX_RECIPIENTS};
use crate::store::{MailStore, NewMessage};

/// Longest command line accepted, CRLF included (RFC 5321 §4.5.3.1.4 says
/// 512; a little slack for long addresses).
pub const MAX_COMMAND_LINE: usize = 2048;
/// Longest line inside DATA (RFC 5321 §4.5.3.1.6 says 1000; accepted up to this).
pub const MAX_DATA_LINE: usize = 64 * 1024;

/// One reply: a code and one or more text lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, text: impl Into<String>) -> Reply {
        Reply {
            code,
            lines: vec![text.into()],
        }
    }

    /// The reply on the wire: `code-text` for all but the last line.
    pub fn encode(&self) -> String {
        let mut s = String::new();
        let n = self.lines.len().max(1);
        for i in 0..n {
            let text = self.lines.get(i).map(String::as_str).unwrap_or("");
            let sep = if i + 1 == n { ' ' } else { '-' };
            s.push_str(&format!("{}{sep}{text}\r\n", self.code));
        }
        s
    }
}

/// The commands the store understands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Helo(String),
    Ehlo(String),
    /// The reverse path, empty for the null sender `<>`.
    MailFrom(String),
    /// The mailbox a recipient address names.
    RcptTo(String),
    Data,
    Rset,
    Noop,
    Quit,
    /// List a mailbox.
    XList(String),
    /// Fetch one message of a mailbox.
    XFetch(String, u64),
}

fn syntax(text: &str) -> Reply {
    Reply::new(501, format!("5.5.4 syntax: {text}"))
}

/// Parses one command line (without CRLF).
pub fn parse_command(line: &str) -> Result<Command, Reply> {
    let line = line.trim_end();
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], line[i + 1..].trim()),
        None => (line, ""),
    };
    let no_args = |c: Command| {
        if rest.is_empty() {
            Ok(c)
        } else {
            Err(syntax(&format!(
                "{} takes no arguments",
                verb.to_ascii_uppercase()
            )))
        }
    };
    match verb.to_ascii_uppercase().as_str() {
        "HELO" | "EHLO" if rest.is_empty() => Err(syntax("HELO/EHLO needs a domain")),
        "HELO" => Ok(Command::Helo(rest.to_string())),
        "EHLO" => Ok(Command::Ehlo(rest.to_string())),
        "MAIL" => {
            let path = path_after(rest, "FROM:").ok_or_else(|| syntax("MAIL FROM:<address>"))?;
            Ok(Command::MailFrom(path.to_string()))
        }
        "RCPT" => {
            let path = path_after(rest, "TO:").ok_or_else(|| syntax("RCPT TO:<address>"))?;
            Ok(Command::RcptTo(mailbox_of(path)?))
        }
        "DATA" => no_args(Command::Data),
        "RSET" => no_args(Command::Rset),
        "NOOP" => Ok(Command::Noop),
        "QUIT" => no_args(Command::Quit),
        "XLIST" => {
            let mut it = rest.split_whitespace();
            match (it.next(), it.next()) {
                (Some(m), None) => Ok(Command::XList(valid_mailbox(m)?)),
                _ => Err(syntax("XLIST mailbox")),
            }
        }
        "XFETCH" => {
            let mut it = rest.split_whitespace();
            match (it.next(), it.next().map(str::parse::<u64>), it.next()) {
                (Some(m), Some(Ok(uid)), None) => Ok(Command::XFetch(valid_mailbox(m)?, uid)),
                _ => Err(syntax("XFETCH mailbox uid")),
            }
        }
        "" => Err(Reply::new(500, "5.5.2 empty command")),
        _ => Err(Reply::new(500, "5.5.1 command unrecognized")),
    }
}

/// The path inside `<...>` after `FROM:` / `TO:` (parameters after it are ignored).
fn path_after<'a>(rest: &'a str, keyword: &str) -> Option<&'a str> {
    let head = rest.get(..keyword.len())?;
    if !head.eq_ignore_ascii_case(keyword) {
        return None;
    }
    let p = rest[keyword.len()..].trim_start();
    let p = p.strip_prefix('<')?;
    let end = p.find('>')?;
    Some(&p[..end])
}

/// Checks a mailbox name: 1 to 64 of `[a-z0-9._+-]`, lower-cased.
pub fn valid_mailbox(m: &str) -> Result<String, Reply> {
    let m = m.to_ascii_lowercase();
    let ok = !m.is_empty()
        && m.len() <= MAX_MAILBOX
        && m.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b));
    if ok {
        Ok(m)
    } else {
        Err(Reply::new(
            553,
            format!("5.1.3 bad mailbox name {m:?}: 1-{MAX_MAILBOX} of a-z 0-9 . _ + -"),
        ))
    }
}

/// The mailbox a recipient address names: its local part.
pub fn mailbox_of(address: &str) -> Result<String, Reply> {
    let local = match address.rsplit_once('@') {
        Some((l, _domain)) => l,
        None => address,
    };
    valid_mailbox(local)
}

/// The Message-ID header value of a message, if it has one that fits.
pub fn message_id_of(body: &[u8]) -> Option<String> {
    for line in body.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            break; // end of the header section
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        if line[..colon].eq_ignore_ascii_case(b"message-id") {
            let v = std::str::from_utf8(&line[colon + 1..]).ok()?.trim();
            return (!v.is_empty() && v.len() <= MAX_MESSAGE_ID).then(|| v.to_string());
        }
    }
    None
}

/// Where a session is in a mail transaction (RFC 5321 §3.3).
#[derive(Debug)]
enum State {
    Fresh,
    Greeted,
    Mail { recipients: BTreeSet<String> },
}

enum Line {
    Eof,
    Complete,
    TooLong,
}

/// Reads one line into `buf` (CRLF or LF stripped), at most `limit` bytes;
/// a longer line is consumed and reported as `TooLong`.
async fn read_line<R: AsyncBufRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
) -> std::io::Result<Line> {
    buf.clear();
    let mut too_long = false;
    loop {
        let avail = r.fill_buf().await?;
        if avail.is_empty() {
            return Ok(if buf.is_empty() && !too_long {
                Line::Eof
            } else {
                Line::Complete
            });
        }
        let (take, done) = match avail.iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (avail.len(), false),
        };
        if !too_long {
            if buf.len() + take > limit {
                too_long = true;
                buf.clear();
            } else {
                buf.extend_from_slice(&avail[..take]);
            }
        }
        r.consume(take);
        if done {
            if too_long {
                return Ok(Line::TooLong);
            }
            if buf.last() == Some(&b'\n') {
                buf.pop();
            }
            if buf.last() == Some(&b'\r') {
                buf.pop();
            }
            return Ok(Line::Complete);
        }
    }
}

async fn send<W: AsyncWrite + Unpin>(w: &mut W, r: &Reply) -> std::io::Result<()> {
    w.write_all(r.encode().as_bytes()).await?;
    w.flush().await
}

/// Serves one client until QUIT, EOF or the store stops.
pub async fn serve_connection<S, D>(
    stream: S,
    store: Arc<MailStore<D>>,
    hostname: &str,
) -> std::io::Result<()>
where
    S: AsyncRead + AsyncWrite + Unpin,
    D: BlockDevice,
{
    let (r, mut w) = tokio::io::split(stream);
    let mut r = BufReader::new(r);
    if let Some(why) = store.is_stopped() {
        return send(
            &mut w,
            &Reply::new(421, format!("4.3.0 {hostname} not available: {why}")),
        )
        .await;
    }
    send(
        &mut w,
        &Reply::new(220, format!("{hostname} busrig mailstore ready")),
    )
    .await?;
    let mut state = State::Fresh;
    let mut line = Vec::new();
    loop {
        let got = tokio::select! {
            got = read_line(&mut r, &mut line, MAX_COMMAND_LINE) => got?,
            why = store.stopped() => {
                let _ = send(&mut w, &Reply::new(421, format!("4.3.0 {hostname} closing: {why}"))).await;
                return Ok(());
            }
        };
        let text = match got {
            Line::Eof => return Ok(()),
            Line::TooLong => {
                send(&mut w, &Reply::new(500, "5.5.6 line too long")).await?;
                continue;
            }
            Line::Complete => match std::str::from_utf8(&line) {
                Ok(t) => t.to_string(),
                Err(_) => {
                    send(&mut w, &Reply::new(500, "5.5.2 command is not UTF-8")).await?;
                    continue;
                }
            },
        };
        let cmd = match parse_command(&text) {
            Ok(c) => c,
            Err(reply) => {
                send(&mut w, &reply).await?;
                continue;
            }
        };
        let reply = match cmd {
            Command::Helo(_) => {
                state = State::Greeted;
                Reply::new(250, format!("{hostname} busrig mailstore"))
            }
            Command::Ehlo(_) => {
                state = State::Greeted;
                Reply {
                    code: 250,
                    lines: vec![
                        format!("{hostname} busrig mailstore"),
                        format!("SIZE {}", store.max_message_bytes()),
                        "8BITMIME".into(),
                    ],
                }
            }
            Command::Quit => {
                send(&mut w, &Reply::new(221, "2.0.0 bye")).await?;
                return Ok(());
            }
            Command::Noop => Reply::new(250, "2.0.0 OK"),
            Command::Rset => {
                if !matches!(state, State::Fresh) {
                    state = State::Greeted;
                }
                Reply::new(250, "2.0.0 OK")
            }
            Command::MailFrom(_) => match state {
                State::Fresh => Reply::new(503, "5.5.1 say HELO or EHLO first"),
                State::Mail { .. } => Reply::new(503, "5.5.1 nested MAIL command"),
                State::Greeted => {
                    state = State::Mail {
                        recipients: BTreeSet::new(),
                    };
                    Reply::new(250, "2.1.0 OK")
                }
            },
            Command::RcptTo(mailbox) => match &mut state {
                State::Mail { recipients } if recipients.len() >= MAX_RECIPIENTS => {
                    Reply::new(452, "4.5.3 too many recipients")
                }
                State::Mail { recipients } => {
                    recipients.insert(mailbox);
                    Reply::new(250, "2.1.5 OK")
                }
                _ => Reply::new(503, "5.5.1 need MAIL before RCPT"),
            },
            Command::Data => {
                let recipients = match &state {
                    State::Mail { recipients } if !recipients.is_empty() => recipients.clone(),
                    State::Mail { .. } => {
                        send(&mut w, &Reply::new(554, "5.5.1 no valid recipients")).await?;
                        continue;
                    }
                    _ => {
                        send(
                            &mut w,
                            &Reply::new(503, "5.5.1 need MAIL and RCPT before DATA"),
                        )
                        .await?;
                        continue;
                    }
                };
                state = State::Greeted;
                send(&mut w, &Reply::new(354, "end data with <CR><LF>.<CR><LF>")).await?;
                match read_data(&mut r, store.max_message_bytes()).await? {
                    DataOutcome::Eof => return Ok(()),
                    DataOutcome::TooBig => Reply::new(
                        552,
                        format!(
                            "5.3.4 message too big (limit {} bytes)",
                            store.max_message_bytes()
                        ),
                    ),
                    DataOutcome::LineTooLong => Reply::new(500, "5.5.6 line too long in DATA"),
                    DataOutcome::Body(body) => {
                        let message_id = message_id_of(&body).unwrap_or_default();
                        let m = NewMessage {
                            message_id,
                            recipients: recipients.into_iter().collect(),
                            body,
                        };
                        match store.deliver(m).await {
                            Ok(a) if a.duplicate => {
                                Reply::new(250, format!("2.0.0 OK uid={} duplicate", a.uid))
                            }
                            Ok(a) => Reply::new(250, format!("2.0.0 OK uid={}", a.uid)),
                            Err(e) => {
                                let (code, text) = e.smtp();
                                Reply::new(code, text)
                            }
                        }
                    }
                }
            }
            Command::XList(mailbox) => {
                let list = store.list(&mailbox);
                let mut lines: Vec<String> = list
                    .iter()
                    .map(|e| {
                        let id = if e.message_id.is_empty() {
                            "-"
                        } else {
                            &e.message_id
                        };
                        format!("{} {} {id}", e.uid, e.size)
                    })
                    .collect();
                lines.push(format!("2.0.0 {} message(s) in {mailbox}", list.len()));
                Reply { code: 250, lines }
            }
            Command::XFetch(mailbox, uid) => match store.fetch(&mailbox, uid).await {
                Ok(Some((e, body))) => {
                    let id = if e.message_id.is_empty() {
                        "-".to_string()
                    } else {
                        e.message_id
                    };
                    let head = Reply::new(250, format!("2.0.0 {uid} {} {id}", body.len()));
                    w.write_all(head.encode().as_bytes()).await?;
                    w.write_all(&body).await?;
                    w.flush().await?;
                    continue;
                }
                Ok(None) => Reply::new(550, format!("5.1.1 no message {uid} in {mailbox}")),
                Err(e) => {
                    let (code, text) = e.smtp();
                    Reply::new(code, text)
                }
            },
        };
        send(&mut w, &reply).await?;
    }
}

enum DataOutcome {
    Body(Bytes),
    TooBig,
    LineTooLong,
    Eof,
}

/// Reads a DATA section up to the lone `.` line, undoing dot-stuffing
/// (RFC 5321 §4.5.2); lines are stored with CRLF.
async fn read_data<R: AsyncBufRead + Unpin>(
    r: &mut R,
    limit: usize,
) -> std::io::Result<DataOutcome> {
    let mut body = Vec::new();
    let mut line = Vec::new();
    let mut too_big = false;
    let mut too_long = false;
    loop {
        match read_line(r, &mut line, MAX_DATA_LINE).await? {
            Line::Eof => return Ok(DataOutcome::Eof),
            Line::TooLong => too_long = true,
            Line::Complete => {
                if line == b"." {
                    break;
                }
                let content = line.strip_prefix(b".").unwrap_or(&line);
                if body.len() + content.len() + 2 > limit {
                    too_big = true;
                }
                if !too_big {
                    body.extend_from_slice(content);
                    body.extend_from_slice(b"\r\n");
                }
            }
        }
    }
    Ok(if too_long {
        DataOutcome::LineTooLong
    } else if too_big {
        DataOutcome::TooBig
    } else {
        DataOutcome::Body(body.into())
    })
}

/// Accepts clients until the store stops (an error: the process must exit
/// non-zero) or `shutdown` resolves.
pub async fn run<D: BlockDevice>(
    listener: TcpListener,
    store: Arc<MailStore<D>>,
    hostname: String,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), String> {
    let mut sessions = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    let outcome = loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((s, peer)) => {
                    let store = store.clone();
                    let hostname = hostname.clone();
                    sessions.spawn(async move {
                        let _ = s.set_nodelay(true);
                        if let Err(e) = serve_connection(s, store, &hostname).await {
                            tracing::debug!(%peer, error = %e, "session ended");
                        }
                    });
                }
                Err(e) => tracing::warn!(error = %e, "accept failed"),
            },
            Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            why = store.stopped() => break Err(why),
            _ = &mut shutdown => break Ok(()),
        }
    };
    drop(listener);
    // Sessions answer what is in flight (451) and say 421; give them a moment.
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        while sessions.join_next().await.is_some() {}
    })
    .await;
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::mem::MemDevice;
    use crate::store::StoreOptions;

    #[test]
    fn commands_parse() {
        let table: &[(&str, Result<Command, u16>)] = &[
            ("HELO client", Ok(Command::Helo("client".into()))),
            ("ehlo x", Ok(Command::Ehlo("x".into()))),
            ("HELO", Err(501)),
            ("MAIL FROM:<a@b>", Ok(Command::MailFrom("a@b".into()))),
            ("mail from: <> SIZE=10", Ok(Command::MailFrom("".into()))),
            ("MAIL TO:<a@b>", Err(501)),
            ("MAIL FROM:a@b", Err(501)),
            (
                "RCPT TO:<Bob@example.com>",
                Ok(Command::RcptTo("bob".into())),
            ),
            (
                "RCPT TO:<postmaster>",
                Ok(Command::RcptTo("postmaster".into())),
            ),
            ("RCPT TO:<b/ad@x>", Err(553)),
            ("RCPT TO:<@x>", Err(553)),
            ("DATA", Ok(Command::Data)),
            ("DATA now", Err(501)),
            ("QUIT", Ok(Command::Quit)),
            ("XLIST bob", Ok(Command::XList("bob".into()))),
            ("XLIST", Err(501)),
            ("XFETCH bob 7", Ok(Command::XFetch("bob".into(), 7))),
            ("XFETCH bob seven", Err(501)),
            ("FROB", Err(500)),
            ("", Err(500)),
        ];
        for (line, want) in table {
            let got = parse_command(line).map_err(|r| r.code);
            assert_eq!(&got, want, "{line:?}");
        }
    }

    #[test]
    fn replies_encode_multiline() {
        let r = Reply {
            code: 250,
            lines: vec!["a".into(), "b".into()],
        };
        assert_eq!(r.encode(), "250-a\r\n250 b\r\n");
    }

    #[test]
    fn message_id_comes_from_the_header_section_only() {
        assert_eq!(
            message_id_of(b"Subject: x\r\nMessage-Id:  <a@b> \r\n\r\nbody"),
            Some("<a@b>".into())
        );
        assert_eq!(
            message_id_of(b"Subject: x\r\n\r\nMessage-ID: <a@b>\r\n"),
            None
        );
    }

    async fn converse(input: &str) -> String {
        let dev = MemDevice::new(512, 16384);
        let (store, _) = MailStore::open(dev, StoreOptions::default()).await.unwrap();
        let store = Arc::new(store);
        let (client, server) = tokio::io::duplex(1 << 20);
        let t = tokio::spawn(async move { serve_connection(server, store, "test").await });
        let (mut cr, mut cw) = tokio::io::split(client);
        cw.write_all(input.as_bytes()).await.unwrap();
        let mut out = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut cr, &mut out)
            .await
            .unwrap();
        t.await.unwrap().unwrap();
        out
    }

    fn codes(out: &str) -> Vec<&str> {
        out.lines()
            .filter(|l| l.len() >= 4 && l.as_bytes()[3] == b' ')
            .map(|l| &l[..3])
            .collect()
    }

    #[tokio::test]
    async fn a_delivery_and_its_retrieval() {
        let out = converse(
            "EHLO c\r\nMAIL FROM:<s@x>\r\nRCPT TO:<bob@x>\r\nDATA\r\n\
             Message-ID: <1@x>\r\n\r\n..dot\r\nhi\r\n.\r\n\
             MAIL FROM:<s@x>\r\nRCPT TO:<bob@x>\r\nDATA\r\nMessage-ID: <1@x>\r\n\r\nagain\r\n.\r\n\
             XLIST bob\r\nXFETCH bob 1\r\nQUIT\r\n",
        )
        .await;
        assert_eq!(
            codes(&out),
            vec![
                "220", "250", "250", "250", "354", "250", "250", "250", "354", "250", "250", "250",
                "221"
            ],
            "{out}"
        );
        assert!(out.contains("250 2.0.0 OK uid=1\r\n"), "{out}");
        assert!(out.contains("250 2.0.0 OK uid=1 duplicate\r\n"), "{out}");
        assert!(out.contains("250-1 31 <1@x>\r\n"), "{out}");
        assert!(
            out.contains("250 2.0.0 1 31 <1@x>\r\nMessage-ID: <1@x>\r\n\r\n.dot\r\nhi\r\n221"),
            "{out}"
        );
    }

    #[tokio::test]
    async fn malformed_input_gets_5xx() {
        let long = "x".repeat(5000);
        let out = converse(&format!(
            "MAIL FROM:<a@b>\r\nHELO c\r\nRCPT TO:<a@b>\r\nDATA\r\nMAIL FROM:<a@b>\r\nDATA\r\n\
             {long}\r\nGARBAGE\r\n\u{ff}\r\nQUIT\r\n"
        ))
        .await;
        assert_eq!(
            codes(&out),
            vec!["220", "503", "250", "503", "503", "250", "554", "500", "500", "500", "221"],
            "{out}"
        );
    }
}
