//! The data of a WRITE or a COMPARE AND WRITE, as `busrig disk` takes it:
//! a file, cut to or checked for whole blocks, or one byte repeated over
//! a number of blocks.

use std::path::{Path, PathBuf};

use bytes::Bytes;

/// Why the data could not be made.
#[derive(Debug, thiserror::Error)]
pub enum BlockDataError {
    /// The file could not be read.
    #[error("{}: {error}", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    /// The file holds fewer blocks than asked for.
    #[error("{} holds {len} bytes, fewer than {blocks} blocks of {block_len}", path.display())]
    Short {
        path: PathBuf,
        len: usize,
        blocks: usize,
        block_len: usize,
    },
    /// No block count was given and the file is not whole blocks.
    #[error("{} is {len} bytes, not whole {block_len}-byte blocks (give --count)", path.display())]
    PartialBlock {
        path: PathBuf,
        len: usize,
        block_len: usize,
    },
    /// Neither a file nor a fill byte.
    #[error("give --in FILE or --pattern BYTE")]
    Missing,
}

impl BlockDataError {
    /// Whether the request itself is wrong (rather than the file).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            BlockDataError::PartialBlock { .. } | BlockDataError::Missing
        )
    }
}

/// `blocks` blocks of `block_len` bytes: the start of `file` (the whole
/// file when `blocks` is `None`, which must then be whole blocks), or,
/// without a file, `fill` repeated (one block when `blocks` is `None`).
pub fn block_data(
    file: Option<&Path>,
    fill: Option<u8>,
    blocks: Option<usize>,
    block_len: usize,
) -> Result<Bytes, BlockDataError> {
    let Some(path) = file else {
        let fill = fill.ok_or(BlockDataError::Missing)?;
        return Ok(Bytes::from(vec![
            fill;
            blocks.unwrap_or(1).max(1) * block_len
        ]));
    };
    let mut d = std::fs::read(path).map_err(|error| BlockDataError::Read {
        path: path.into(),
        error,
    })?;
    match blocks {
        Some(n) if d.len() < n * block_len => Err(BlockDataError::Short {
            path: path.into(),
            len: d.len(),
            blocks: n,
            block_len,
        }),
        Some(n) => {
            d.truncate(n * block_len);
            Ok(Bytes::from(d))
        }
        None if d.is_empty() || d.len() % block_len != 0 => Err(BlockDataError::PartialBlock {
            path: path.into(),
            len: d.len(),
            block_len,
        }),
        None => Ok(Bytes::from(d)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fill_byte_covers_the_blocks() {
        let b = block_data(None, Some(0xa5), Some(2), 512).unwrap();
        assert_eq!(b.len(), 1024);
        assert!(b.iter().all(|x| *x == 0xa5));
        assert_eq!(block_data(None, Some(1), None, 512).unwrap().len(), 512);
        let e = block_data(None, None, None, 512).unwrap_err();
        assert!(e.is_usage());
    }

    #[test]
    fn a_file_is_cut_to_or_checked_for_whole_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("data");
        std::fs::write(&p, vec![7u8; 1500]).unwrap();
        assert_eq!(
            block_data(Some(&p), None, Some(2), 512).unwrap().len(),
            1024
        );
        let short = block_data(Some(&p), None, Some(3), 512).unwrap_err();
        assert!(matches!(short, BlockDataError::Short { .. }) && !short.is_usage());
        let partial = block_data(Some(&p), None, None, 512).unwrap_err();
        assert!(partial.is_usage(), "{partial}");
        assert!(partial
            .to_string()
            .ends_with("is 1500 bytes, not whole 512-byte blocks (give --count)"));
        let missing = block_data(Some(&dir.path().join("none")), None, None, 512).unwrap_err();
        assert!(matches!(missing, BlockDataError::Read { .. }) && !missing.is_usage());
    }
}
