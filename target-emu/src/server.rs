//! The target server: a validated configuration turned into open logical
//! units, one SCSI executor per target, and the iSCSI portal that serves
//! them; plus [`serve`], what `busrig target` runs.
//!
//! STYLE rule 7: [`TargetServer::run`] takes its listener and a shutdown
//! future from the caller, and [`TargetServer::serve_stream`] serves any
//! `AsyncRead + AsyncWrite`, so tests drive the target in-process.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;

use crate::config::{Config, ConfigError, ValidConfig};
use crate::control::Control;
use crate::fault::Faults;
use crate::iscsi::{Portal, PortalTarget, SessionInfo};
use crate::lu::{LogicalUnit, LunError, LunSpec};
use crate::reconfig::{lun_spec, Registry};
use crate::scsi::ScsiTarget;
use crate::tasks::TaskRegistry;

/// What `busrig target` was asked to do.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Configuration file; `None` uses the embedded default bus.
    pub config: Option<PathBuf>,
    /// Address to listen on (port 0 picks a free port).
    pub listen: SocketAddr,
    /// Directory for LUN files with relative paths.
    pub data_dir: PathBuf,
    /// Control plane address (loopback by default; port 0 picks a free port).
    pub control: SocketAddr,
    /// Token control clients present to change anything (and, off the
    /// host, to read); without one the control plane only answers reads
    /// from loopback (docs/security.md).
    pub control_token: Option<String>,
    /// The control plane's connection cap and time limits, apart from the
    /// portal's.
    pub control_limits: busrig_http::Limits,
}

impl ServeOptions {
    /// The defaults of the command line: 127.0.0.1:3260 and ./busrig-data.
    pub fn new() -> ServeOptions {
        ServeOptions {
            config: None,
            listen: SocketAddr::from(([127, 0, 0, 1], 3260)),
            data_dir: PathBuf::from("busrig-data"),
            control: SocketAddr::from(([127, 0, 0, 1], 3261)),
            control_token: None,
            control_limits: crate::control::CONTROL_LIMITS,
        }
    }
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions::new()
    }
}

/// Why the server could not start or stop cleanly. A variant with a
/// cause returns it as its source and leaves it out of its own message,
/// so `busrig target` prints each cause once.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The configuration is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory (or a LUN file's directory) could not be created.
    #[error("cannot create directory {path}")]
    Directory {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A logical unit could not be opened.
    #[error("target {target}")]
    Lun {
        target: String,
        #[source]
        source: LunError,
    },
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The readiness line could not be written.
    #[error("cannot write the readiness line to stdout")]
    Stdout(#[source] std::io::Error),
    /// The signal handlers could not be installed.
    #[error("cannot install signal handlers")]
    Signal(#[source] std::io::Error),
    /// Flushing a LUN file at shutdown failed.
    #[error("flushing LUN {lun} of target {target}")]
    Flush {
        target: String,
        lun: u64,
        #[source]
        source: std::io::Error,
    },
}

/// The emulated bus, ready to serve.
pub struct TargetServer {
    portal: Arc<Portal>,
    config: ValidConfig,
}

impl TargetServer {
    /// Creates the data directory, opens (creating sparse files where
    /// missing) every LUN, and builds one SCSI target per configured target
    /// sharing one task registry. `config` has been validated, so nothing
    /// here runs unless the whole configuration is good.
    pub fn build(config: ValidConfig) -> Result<TargetServer, ServerError> {
        for t in &config.targets {
            if let Some(chap) = &t.chap {
                crate::reconfig::warn_weak_chap(&t.name, chap);
            }
        }
        std::fs::create_dir_all(&config.data_dir).map_err(|source| ServerError::Directory {
            path: config.data_dir.clone(),
            source,
        })?;
        let tasks = TaskRegistry::new();
        let faults = Arc::new(Faults::new());
        // One link per bus with a modelled bandwidth, shared by its targets.
        let links: Vec<Option<Arc<crate::model::Link>>> = config
            .buses
            .iter()
            .map(|b| {
                b.bandwidth
                    .clone()
                    .map(|l| Arc::new(crate::model::Link::new(l)))
            })
            .collect();
        // Every LUN's backing file is checked before any is created or
        // resized, so a refused size change leaves every file as it was.
        let specs: Vec<Vec<LunSpec>> = config
            .targets
            .iter()
            .map(|t| t.luns.iter().map(lun_spec).collect())
            .collect();
        for (t, specs) in config.targets.iter().zip(&specs) {
            for spec in specs {
                crate::lu::check_backing_file(spec).map_err(|source| ServerError::Lun {
                    target: t.name.clone(),
                    source,
                })?;
            }
        }
        // Each bus's targets reach each other's LUs by EXTENDED COPY.
        let peers: Vec<Arc<crate::scsi::BusPeers>> =
            config.buses.iter().map(|_| Arc::default()).collect();
        let mut targets = Vec::new();
        for (t, specs) in config.targets.iter().zip(specs) {
            let mut luns = Vec::new();
            for spec in specs {
                if let Some(parent) = spec.path.parent() {
                    std::fs::create_dir_all(parent).map_err(|source| ServerError::Directory {
                        path: parent.to_path_buf(),
                        source,
                    })?;
                }
                let lu = LogicalUnit::open(spec, &t.name).map_err(|source| ServerError::Lun {
                    target: t.name.clone(),
                    source,
                })?;
                luns.push(Arc::new(lu));
            }
            let scsi = Arc::new(
                ScsiTarget::new(&t.name, luns, tasks.clone())
                    .with_faults(faults.clone())
                    .with_link(links.get(t.bus).cloned().flatten())
                    .with_peers(peers.get(t.bus).cloned().unwrap_or_default()),
            );
            targets.push(PortalTarget {
                def: t.clone(),
                scsi,
            });
        }
        for (bus, p) in peers.iter().enumerate() {
            p.set(
                targets
                    .iter()
                    .filter(|t| t.def.bus == bus)
                    .map(|t| (t.def.tpgt, Arc::downgrade(&t.scsi)))
                    .collect(),
            );
        }
        let portal = Portal::new(
            targets,
            config.buses.clone(),
            config.iscsi.clone(),
            tasks,
            faults,
            Registry::new(config.data_dir.clone(), links, peers),
        );
        Ok(TargetServer { portal, config })
    }

    /// The portal, for control APIs (sessions, targets, resets).
    pub fn portal(&self) -> &Arc<Portal> {
        &self.portal
    }

    /// The configuration the server was started with (the running one,
    /// after live changes, is [`crate::reconfig::running_config`]).
    pub fn config(&self) -> &ValidConfig {
        &self.config
    }

    /// The SCSI target named `name`.
    pub fn target(&self, name: &str) -> Option<Arc<ScsiTarget>> {
        self.portal
            .target_index(name)
            .and_then(|i| self.portal.target(i))
            .map(|t| t.scsi.clone())
    }

    /// Live sessions.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.portal.sessions()
    }

    /// Serves one already-connected stream (login through logout). Tests
    /// use it with `tokio::io::duplex`.
    pub async fn serve_stream<S>(&self, stream: S, peer: String)
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        self.portal
            .clone()
            .serve_connection(stream, peer, None)
            .await
    }

    /// Accepts iSCSI connections on `listener` until `shutdown` resolves,
    /// then closes every session, waits for the connections to end and
    /// flushes every LUN file.
    pub async fn run(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), ServerError> {
        self.portal.clone().run(listener, shutdown).await;
        self.flush().await
    }

    /// fdatasync every LUN file.
    pub async fn flush(&self) -> Result<(), ServerError> {
        let mut first_error = None;
        for t in self.portal.targets() {
            for lu in t.scsi.luns() {
                let id = lu.lun();
                if let Err(source) = lu.sync().await {
                    tracing::error!(target = %t.def.name, lun = id, error = %source, "flush failed");
                    first_error.get_or_insert(ServerError::Flush {
                        target: t.def.name.clone(),
                        lun: id,
                        source,
                    });
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

/// Loads and validates the configuration (the file, or the embedded
/// default) against `data_dir`, touching nothing on disk.
pub fn load_config(
    config: Option<&std::path::Path>,
    data_dir: &std::path::Path,
) -> Result<ValidConfig, ServerError> {
    let raw = match config {
        Some(path) => Config::load(path)?,
        None => Config::embedded_default(),
    };
    Ok(raw.validate(data_dir)?)
}

/// Descriptors the target needs besides its connections: LUN files, the
/// listeners, the control plane's clients, the runtime's own.
const FD_HEADROOM: u64 = 256;

/// Raises the soft limit on open files (RLIMIT_NOFILE) to the hard limit,
/// so `iscsi.max_connections` sockets can be open at once, and logs what
/// it is. The default soft limit (often 1024) would otherwise make
/// `accept` fail long before the configured maximum. Returns the soft
/// limit in force afterwards.
pub fn raise_open_file_limit(max_connections: u32) -> Option<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open file limit");
            return None;
        }
    };
    let needed = u64::from(max_connections) + FD_HEADROOM;
    let mut now = soft;
    if soft < hard {
        match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => now = hard,
            Err(e) => tracing::warn!(error = %e, soft, hard, "cannot raise the open file limit"),
        }
    }
    if now < needed {
        tracing::warn!(
            open_files = now,
            needed,
            max_connections,
            "the open file limit is below what iscsi.max_connections needs; accept will fail before the maximum is reached"
        );
    } else {
        tracing::info!(
            open_files = now,
            previous = soft,
            hard,
            max_connections,
            "open file limit"
        );
    }
    Some(now)
}

/// `busrig target`: load and validate the configuration, open the LUNs,
/// bind, print `busrig target listening on <ADDR>` (the bound address,
/// with the real port when port 0 was asked for) and flush stdout, serve
/// until Ctrl-C or SIGTERM, then close every session and flush the LUNs.
pub async fn serve(opts: ServeOptions) -> Result<(), ServerError> {
    let config = load_config(opts.config.as_deref(), &opts.data_dir)?;
    raise_open_file_limit(config.iscsi.max_connections);
    let server = TargetServer::build(config)?;
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: opts.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind {
        addr: opts.listen,
        source,
    })?;
    let control_listener =
        TcpListener::bind(opts.control)
            .await
            .map_err(|source| ServerError::Bind {
                addr: opts.control,
                source,
            })?;
    let control_addr = control_listener
        .local_addr()
        .map_err(|source| ServerError::Bind {
            addr: opts.control,
            source,
        })?;
    if opts.control_token.is_none() {
        tracing::warn!(%control_addr, "control plane without a token (BUSRIG_CONTROL_TOKEN): it only answers reads from loopback, and refuses every fault, reset and LUN change");
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(ServerError::Signal)?;
    let control = Control::new(server.portal().clone());
    let control_stop = tokio_util::sync::CancellationToken::new();
    let control_task = tokio::spawn(
        busrig_http::Server::new(control.router())
            .token(opts.control_token.clone())
            .limits(opts.control_limits)
            .serve(control_listener, control_stop.clone().cancelled_owned()),
    );
    {
        let mut out = std::io::stdout().lock();
        // The control line comes first: a client that has seen the portal
        // line can rely on the control plane too.
        writeln!(out, "busrig target control on {control_addr}").map_err(ServerError::Stdout)?;
        writeln!(out, "busrig target listening on {addr}").map_err(ServerError::Stdout)?;
        out.flush().map_err(ServerError::Stdout)?;
    }
    for t in server.portal().targets() {
        tracing::info!(target = %t.def.name, luns = t.def.luns.len(), tpgt = t.def.tpgt, "serving target");
    }
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("interrupt: shutting down"),
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        }
    };
    let result = server.run(listener, shutdown).await;
    control_stop.cancel();
    let _ = control_task.await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_config_creates_no_files() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("bad.toml");
        std::fs::write(
            &cfg,
            "[[target]]\nname = \"iqn.2026-11.io.busrig:t\"\n[[target.lun]]\nid = 0\nsize = \"1MiB\"\n\
             [[target.lun]]\nid = 1\nsize = \"1MiB\"\nblock_size = 1000\n",
        )
        .unwrap();
        let data = dir.path().join("data");
        let opts = ServeOptions {
            config: Some(cfg),
            listen: "127.0.0.1:0".parse().unwrap(),
            data_dir: data.clone(),
            control: "127.0.0.1:0".parse().unwrap(),
            control_token: None,
            control_limits: crate::control::CONTROL_LIMITS,
        };
        let err = serve(opts).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "lun 1 of target iqn.2026-11.io.busrig:t: block_size must be 512 or 4096, got 1000"
        );
        assert!(!data.exists());
    }

    #[test]
    fn open_file_limit_is_raised_to_the_hard_limit() {
        use nix::sys::resource::{getrlimit, Resource};
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        let now = raise_open_file_limit(1024).unwrap();
        assert_eq!(now, hard);
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap().0, hard);
    }

    #[tokio::test]
    async fn build_opens_default_luns_sparse() {
        let dir = tempfile::tempdir().unwrap();
        let config = load_config(None, dir.path()).unwrap();
        let server = TargetServer::build(config).unwrap();
        let t = server.target(crate::config::DEFAULT_TARGET_NAME).unwrap();
        assert_eq!(t.lun_ids(), vec![0, 1, 2]);
        let meta = std::fs::metadata(dir.path().join("bus0-lun1-data.img")).unwrap();
        assert_eq!(meta.len(), 1 << 30);
        use std::os::unix::fs::MetadataExt;
        // Sparse: far fewer blocks allocated than the apparent size.
        assert!(meta.blocks() * 512 < 1 << 20);
        server.flush().await.unwrap();
    }
}
