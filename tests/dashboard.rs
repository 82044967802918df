//! `busrig dashboard` in a real headless browser (Debian's `chromium`,
//! driven by `chromedriver` over WebDriver, W3C WebDriver §6-§17, with
//! busrig's own HTTP client): a three-node lab with one group; the page
//! shows the nodes online, the quorum owner and the group's owner; the
//! group's owner is killed and the page, without a reload, shows it
//! offline, the group online on another node and the failover on the
//! timeline; the page's move action moves the group.
//!
//! Skips visibly without chromium and chromedriver, fails instead under
//! `BUSRIG_EXTERNAL=require`. With `BUSRIG_DASHBOARD_SCREENSHOTS=DIR` the
//! page is saved as `DIR/dashboard-before.png` and `dashboard-after.png`
//! (the README's screenshots).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

mod common;
use common::external_tool;
use common::lab::{Lab, POLL};

/// How long the page may take to show a change the cluster made.
const PAGE_LIMIT: Duration = Duration::from_secs(15);

/// Kills the child on drop, even when the test fails.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Spawns `cmd` with stdout piped and returns it with the rest of the
/// first line starting with `prefix` (its readiness line).
fn spawn_ready(mut cmd: Command, prefix: &'static str) -> (Reaped, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn");
    let out = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    // Keeps draining stdout so the child never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut tx = Some(tx);
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if let Some(rest) = line
                .find(prefix)
                .map(|i| line[i + prefix.len()..].to_string())
            {
                if let Some(tx) = tx.take() {
                    let _ = tx.send(rest);
                }
            }
        }
    });
    let child = Reaped(child);
    let rest = rx
        .recv_timeout(Duration::from_secs(30))
        .unwrap_or_else(|_| panic!("no readiness line {prefix:?} within 30 s"));
    (child, rest)
}

/// A chromedriver and one headless chromium session.
struct Browser {
    rt: tokio::runtime::Runtime,
    driver: String,
    session: String,
    _chromedriver: Reaped,
    _profile: tempfile::TempDir,
}

impl Browser {
    fn start() -> Browser {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new("chromedriver");
        cmd.arg(format!("--port={port}"));
        let (chromedriver, _) = spawn_ready(cmd, "was started successfully");
        let profile = tempfile::tempdir().unwrap();
        let rt = busrig_lab::runtime().unwrap();
        let driver = format!("127.0.0.1:{port}");
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium_binary(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                         "--disable-dev-shm-usage", "--window-size=1400,1700",
                         format!("--user-data-dir={}", profile.path().display())]
            }
        }}});
        let (code, v) = rt
            .block_on(busrig_http::request(
                &driver,
                "POST",
                "/session",
                Some(&caps),
                None,
            ))
            .expect("chromedriver answers");
        assert_eq!(code, 200, "new session: {v}");
        let session = v["value"]["sessionId"]
            .as_str()
            .expect("session id")
            .to_string();
        Browser {
            rt,
            driver,
            session,
            _chromedriver: chromedriver,
            _profile: profile,
        }
    }

    /// One WebDriver command of this session; its `value`.
    fn cmd(&self, method: &str, path: &str, body: Value) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let body = (method == "POST").then_some(body);
        let (code, v) = self
            .rt
            .block_on(busrig_http::request(
                &self.driver,
                method,
                &path,
                body.as_ref(),
                None,
            ))
            .expect("chromedriver answers");
        assert_eq!(code, 200, "{method} {path}: {v}");
        v["value"].clone()
    }

    fn open(&self, url: &str) {
        self.cmd("POST", "/url", json!({ "url": url }));
    }

    /// Runs `script` in the page (W3C WebDriver §13.2.1).
    fn script(&self, script: &str) -> Value {
        self.cmd(
            "POST",
            "/execute/sync",
            json!({ "script": script, "args": [] }),
        )
    }

    /// Clicks the element `css` selects, as a user would (§12.4.1). An
    /// element the page rebuilt between finding and clicking (a stale
    /// element, §12.4.1 step 4) is found again.
    fn click(&self, css: &str) {
        for _ in 0..3 {
            let e = self.cmd(
                "POST",
                "/element",
                json!({ "using": "css selector", "value": css }),
            );
            let id = e["element-6066-11e4-a52e-4f735466cecf"]
                .as_str()
                .unwrap_or_else(|| panic!("no element {css}: {e}"))
                .to_string();
            let path = format!("/session/{}/element/{id}/click", self.session);
            let (code, v) = self
                .rt
                .block_on(busrig_http::request(
                    &self.driver,
                    "POST",
                    &path,
                    Some(&json!({})),
                    None,
                ))
                .expect("chromedriver answers");
            match (code, v["value"]["error"].as_str()) {
                (200, _) => return,
                (_, Some("stale element reference")) => continue,
                _ => panic!("click {css}: HTTP {code}: {v}"),
            }
        }
        panic!("click {css}: the element went stale three times");
    }

    /// What the page shows, read from its DOM.
    fn page(&self) -> Page {
        let v = self.script(PAGE_SCRIPT);
        serde_json::from_str(v.as_str().expect("a string")).expect("page JSON")
    }

    /// Waits until the page shows what `cond` wants.
    fn wait(&self, what: &str, cond: impl Fn(&Page) -> bool) -> Page {
        let start = Instant::now();
        loop {
            let p = self.page();
            if cond(&p) {
                return p;
            }
            assert!(
                start.elapsed() < PAGE_LIMIT,
                "{what}: not within {PAGE_LIMIT:?}; the page shows {p:#?}"
            );
            std::thread::sleep(POLL * 5);
        }
    }

    /// Saves the page as `NAME.png` under `BUSRIG_DASHBOARD_SCREENSHOTS`.
    fn screenshot(&self, name: &str) {
        let Some(dir) = std::env::var_os("BUSRIG_DASHBOARD_SCREENSHOTS") else {
            return;
        };
        let png = self.cmd("GET", "/screenshot", Value::Null);
        let bytes = base64_decode(png.as_str().expect("base64 PNG"));
        assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
        let p = std::path::Path::new(&dir).join(format!("{name}.png"));
        std::fs::write(&p, bytes).unwrap();
        eprintln!("screenshot: {}", p.display());
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ends chromium before its driver goes.
        let path = format!("/session/{}", self.session);
        let _ = self.rt.block_on(busrig_http::request(
            &self.driver,
            "DELETE",
            &path,
            None,
            None,
        ));
    }
}

fn chromium_binary() -> String {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or("chromium")
        .to_string()
}

/// The page's state as its DOM shows it.
const PAGE_SCRIPT: &str = r#"
const q = (s) => [...document.querySelectorAll(s)];
const text = (r, s) => { const e = r.querySelector(s); return e ? e.textContent.trim() : null; };
return JSON.stringify({
  conn: text(document, '#conn'),
  quorum_owner: text(document, '#quorum-owner'),
  nodes: Object.fromEntries(q('#nodes tbody tr[data-node]').map(r => [r.dataset.node, text(r, '.node-state')])),
  heard: Object.fromEntries(q('#nodes tbody tr[data-node]').map(r => [r.dataset.node, text(r, '.heard')])),
  groups: Object.fromEntries(q('#groups tbody tr[data-group]').map(r => [r.dataset.group,
    { owner: text(r, '.group-owner'), state: text(r, '.group-state .state') }])),
  timeline: q('#timeline li').map(li => li.textContent),
  marker: window.busrigTestMarker || null,
});
"#;

#[derive(Debug, serde::Deserialize)]
struct Page {
    conn: Option<String>,
    quorum_owner: Option<String>,
    nodes: std::collections::BTreeMap<String, Option<String>>,
    heard: std::collections::BTreeMap<String, Option<String>>,
    groups: std::collections::BTreeMap<String, GroupRow>,
    timeline: Vec<String>,
    marker: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
struct GroupRow {
    owner: Option<String>,
    state: Option<String>,
}

impl Page {
    fn node(&self, n: &str) -> &str {
        self.nodes.get(n).and_then(|s| s.as_deref()).unwrap_or("")
    }

    fn group_on(&self, g: &str, node: &str) -> bool {
        self.groups.get(g).is_some_and(|r| {
            r.owner.as_deref() == Some(node) && r.state.as_deref() == Some("online")
        })
    }

    fn group_owner(&self, g: &str) -> Option<&str> {
        self.groups.get(g).and_then(|r| r.owner.as_deref())
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = s
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .map(val)
        .collect();
    digits
        .chunks(4)
        .flat_map(|c| {
            let n = c
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, d)| n | u32::from(*d) << (18 - 6 * i));
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            bytes[..c.len() - 1].to_vec()
        })
        .collect()
}

/// The group's owner and state as the cluster itself reports them.
fn owner_of(lab: &Lab, g: &str) -> (Option<String>, Option<String>) {
    let c: Value = serde_json::from_str(&lab.cluster(&["group", "list", "--json"])).unwrap();
    (
        c[g]["owner"].as_str().map(String::from),
        c[g]["state"]["state"].as_str().map(String::from),
    )
}

#[test]
fn the_page_follows_a_failover_live_and_moves_a_group() {
    if !external_tool("chromium", "chromium") || !external_tool("chromedriver", "chromium-driver") {
        return;
    }
    let lab = Lab::up(3, "disk-scsi2", "fast");
    let disk = format!("disk=iscsi://{}/{}/1", lab.portal, busrig_lab::LAB_TARGET);
    lab.cluster(&["group", "create", "G", "--preferred", "NODE1,NODE2,NODE3"]);
    lab.cluster(&[
        "resource",
        "create",
        "G-Disk",
        "--group",
        "G",
        "--type",
        "physical-disk",
        "--prop",
        &disk,
    ]);
    let online_on = |n: &str| (Some(n.to_string()), Some("online".to_string()));
    lab.wait("G online on NODE1", Duration::from_secs(20), |l| {
        owner_of(l, "G") == online_on("NODE1")
    });
    let quorum_owner = lab
        .status("NODE2")
        .and_then(|s| s.quorum_owner)
        .expect("a quorum owner");

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_busrig"));
    cmd.args([
        "dashboard",
        "--lab",
        lab.d(),
        "--listen",
        "127.0.0.1:0",
        "--poll-ms",
        "250",
    ])
    .env("RUST_LOG", "warn");
    let (_dashboard, url) = spawn_ready(cmd, busrig_dashboard::READY_LINE);
    assert!(
        url.contains("#token="),
        "a lab's dashboard address carries its token: {url}"
    );

    let browser = Browser::start();
    browser.open(url.trim());
    let before = browser.wait("three nodes online, the quorum owner and G on NODE1", |p| {
        ["NODE1", "NODE2", "NODE3"]
            .iter()
            .all(|n| p.node(n) == "online")
            && p.quorum_owner.as_deref() == Some(quorum_owner.as_str())
            && p.group_on("G", "NODE1")
    });
    assert_eq!(before.conn.as_deref(), Some("live"));
    // The node whose view is shown says how long ago it heard the others
    // on each network: "N ms / N ms" (the fast profile's heartbeat is
    // 100 ms).
    let ages: Vec<&String> = before
        .heard
        .values()
        .flatten()
        .filter(|h| h.contains(" / "))
        .collect();
    assert_eq!(
        ages.len(),
        2,
        "heartbeat ages of the two other nodes: {:?}",
        before.heard
    );
    // Set in this page load: a reload would lose it.
    browser.script("window.busrigTestMarker = 'loaded once'; return null;");
    browser.screenshot("dashboard-before");

    lab.lab(&["kill", "NODE1"]);
    let killed = Instant::now();
    let after = browser.wait("NODE1 offline and G online on another node", |p| {
        p.node("NODE1") == "offline"
            && ["NODE2", "NODE3"].iter().any(|n| p.group_on("G", n))
            && p.timeline
                .iter()
                .any(|t| t.contains("group G online on NODE"))
    });
    eprintln!(
        "the page showed the failover {:?} after the kill",
        killed.elapsed()
    );
    assert_eq!(
        after.marker.as_deref(),
        Some("loaded once"),
        "the page was reloaded"
    );
    let new_owner = after.group_owner("G").unwrap().to_string();
    assert_eq!(
        owner_of(&lab, "G"),
        online_on(&new_owner),
        "the page agrees with the cluster"
    );
    assert!(
        after
            .timeline
            .iter()
            .any(|t| t.contains(&format!("group G online on {new_owner}"))),
        "the cluster event log's failover is on the timeline: {:#?}",
        after.timeline
    );
    assert!(
        after
            .timeline
            .iter()
            .any(|t| t.contains(&format!("group G owner {new_owner} (was NODE1)"))),
        "the owner change is on the timeline: {:#?}",
        after.timeline
    );
    browser.screenshot("dashboard-after");

    // The page's move action: the button, the confirmation, the node.
    let target = if new_owner == "NODE2" {
        "NODE3"
    } else {
        "NODE2"
    };
    browser.click(r#"tr[data-group="G"] button[data-action="group-move"]"#);
    browser.click(&format!(r#"#confirm-choice option[value="{target}"]"#));
    browser.click("#confirm-ok");
    let moved = browser.wait("G online on the node chosen", |p| p.group_on("G", target));
    assert_eq!(
        moved.marker.as_deref(),
        Some("loaded once"),
        "the page was reloaded"
    );
    lab.wait("the cluster moved G", Duration::from_secs(10), |l| {
        owner_of(l, "G") == online_on(target)
    });
    assert!(
        moved
            .timeline
            .iter()
            .any(|t| t.contains(&format!("move group G to {target}: done"))),
        "the action is on the timeline: {:#?}",
        moved.timeline
    );
}

/// `busrig lab up --dashboard` starts the dashboard in the background and
/// prints its address; reads are open on loopback, an action needs the
/// dashboard's token (a refused one changes nothing), bad input is a 400,
/// a good one goes through; `busrig lab down` stops the dashboard.
#[test]
fn lab_up_dashboard_follows_the_token_rule_and_lab_down_stops_it() {
    use common::lab::busrig;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    let out = busrig(&["lab", "up", "--dir", d, "--nodes", "2", "--dashboard"]);
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    struct Down<'a>(&'a str);
    impl Drop for Down<'_> {
        fn drop(&mut self) {
            let _ = busrig(&["lab", "down", "--dir", self.0]);
        }
    }
    let _down = Down(d);
    assert!(
        out.status.success(),
        "lab up: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("dashboard: "))
        .unwrap_or_else(|| panic!("no dashboard line: {stdout}"));
    let (url, pid) = line.split_once(" (pid ").expect("URL (pid N)");
    let pid: u32 = pid.trim_end_matches(')').parse().unwrap();
    let addr = url
        .strip_prefix("http://")
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    let token = url.split_once("#token=").unwrap().1.to_string();
    let rt = busrig_lab::runtime().unwrap();
    let ask = |method: &str, path: &str, body: Option<Value>, token: Option<&str>| {
        rt.block_on(busrig_http::request(
            &addr,
            method,
            path,
            body.as_ref(),
            token,
        ))
        .expect("the dashboard answers")
    };
    let state = || ask("GET", "/state", None, None).1;
    let start = Instant::now();
    while state()["cluster"]["nodes"].as_array().map_or(0, Vec::len) != 2 {
        assert!(start.elapsed() < PAGE_LIMIT, "no state: {}", state());
        std::thread::sleep(POLL);
    }
    let node2 = |s: &Value| s["cluster"]["nodes"][1]["state"].as_str().map(String::from);
    let pause = json!({"action": "node-pause", "node": "NODE2"});
    let (code, v) = ask("POST", "/action", Some(pause.clone()), None);
    assert_eq!(code, 401, "an action without the token: {v}");
    let (code, v) = ask(
        "POST",
        "/action",
        Some(pause.clone()),
        Some("not-the-token"),
    );
    assert_eq!(code, 401, "an action with a wrong token: {v}");
    let (code, v) = ask(
        "POST",
        "/action",
        Some(json!({"action": "format-everything"})),
        Some(&token),
    );
    assert_eq!(code, 400, "a bad action: {v}");
    assert!(
        v["error"].as_str().unwrap().contains("not an action"),
        "{v}"
    );
    let status = |n: &str| -> Value {
        let out = busrig(&["cluster", "--lab", d, "status", "--json"]);
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["name"] == n)
            .unwrap()["state"]
            .clone()
    };
    assert_eq!(
        status("NODE2"),
        json!("online"),
        "a refused action changed nothing"
    );
    let (code, v) = ask("POST", "/action", Some(pause), Some(&token));
    assert_eq!(code, 200, "pause NODE2 with the token: {v}");
    assert_eq!(status("NODE2"), json!("paused"));
    let start = Instant::now();
    while node2(&state()).as_deref() != Some("paused") {
        assert!(
            start.elapsed() < PAGE_LIMIT,
            "the dashboard did not show NODE2 paused: {}",
            state()
        );
        std::thread::sleep(POLL);
    }
    let out = busrig(&["lab", "down", "--dir", d]);
    assert!(out.status.success());
    assert!(
        !busrig_lab::alive(pid),
        "lab down left the dashboard running"
    );
    assert!(!dir
        .path()
        .join(busrig_dashboard::LAB_DASHBOARD_FILE)
        .exists());
}
