//! Loading a cluster file from disk: the one place the binary, the lab and
//! the mail load find the `ClusterConfig` every node of a cluster shares
//! (docs/architecture.md).

use std::path::{Path, PathBuf};

use crate::config::{ClusterConfig, ConfigError};

/// A cluster file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterFileError {
    /// The file could not be read. (The causes are part of the message,
    /// not error sources, so `{:#}` chains do not print them twice.)
    #[error("cannot read cluster file {}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The file was read but does not parse or validate.
    #[error("{}: {error}", path.display())]
    Invalid { path: PathBuf, error: ConfigError },
}

/// Reads, parses and validates the cluster file at `path`.
pub fn load(path: &Path) -> Result<ClusterConfig, ClusterFileError> {
    let text = std::fs::read_to_string(path).map_err(|error| ClusterFileError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    ClusterConfig::from_toml(&text).map_err(|error| ClusterFileError::Invalid {
        path: path.to_path_buf(),
        error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_file_names_the_path() {
        let e = load(Path::new("/nonexistent/busrig-cluster.toml")).unwrap_err();
        assert!(matches!(e, ClusterFileError::Read { .. }));
        assert!(e.to_string().contains("/nonexistent/busrig-cluster.toml"));
    }

    #[test]
    fn invalid_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("cluster.toml");
        std::fs::write(&p, "this is = = not toml").unwrap();
        let e = load(&p).unwrap_err();
        assert!(matches!(e, ClusterFileError::Invalid { .. }));
        assert!(e.to_string().starts_with(&p.display().to_string()));
    }
}
