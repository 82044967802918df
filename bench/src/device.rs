//! What a job's workers drive: a LUN through one iSCSI session, or a
//! local file with no network in between (`file:///path`, the reference
//! of `scripts/compare-limits.sh`).
//!
//! The local file is read and written the way `busrig target` reads and
//! writes a LUN's backing file, so the two figures differ by the network
//! and the iSCSI stack only: buffered I/O through the page cache (no
//! O_DIRECT; the bench uses none elsewhere), each read or write first
//! tried with `preadv2` / `pwritev2` and `RWF_NOWAIT` on the bench's own
//! thread, the part the page cache cannot do at once on the blocking
//! pool, and a FUA write followed by fdatasync (SBC-3 §4.15). The file is
//! seen as a LUN of 512-byte blocks, the target's default block length,
//! as long as its whole blocks.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use busrig_initiator::scsi::cdb;
use busrig_initiator::{Disk, Error};
use bytes::Bytes;

/// The block length of a local file seen as a LUN.
pub const FILE_BLOCK_LEN: u32 = 512;

/// Where a worker's I/O goes.
pub enum Device {
    /// A LUN through one session (one I_T nexus).
    Lun(Disk),
    /// A local file, opened once per `--sessions`.
    File(LocalFile),
}

/// Why one I/O of a [`Device`] failed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    /// The initiator or the target said no.
    #[error("{0}")]
    Scsi(#[from] Error),
    /// The local file's system call failed.
    #[error("local file: {0}")]
    File(#[from] io::Error),
}

impl DeviceError {
    /// RESERVATION CONFLICT from the target.
    pub fn is_reservation_conflict(&self) -> bool {
        matches!(self, DeviceError::Scsi(e) if e.is_reservation_conflict())
    }
}

/// A local file read and written like a backing file of `busrig target`.
pub struct LocalFile {
    file: Arc<File>,
    blocks: u64,
    /// Cleared when the file system refuses `RWF_NOWAIT`: every I/O then
    /// goes to the blocking pool.
    nowait: AtomicBool,
}

impl LocalFile {
    /// Opens an existing file for reading and writing.
    pub fn open(path: &Path) -> io::Result<LocalFile> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        let len = file.metadata()?.len();
        let blocks = len / u64::from(FILE_BLOCK_LEN);
        if blocks == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} holds no whole {FILE_BLOCK_LEN}-byte block ({len} bytes)",
                    path.display()
                ),
            ));
        }
        Ok(LocalFile {
            file: Arc::new(file),
            blocks,
            nowait: AtomicBool::new(nowait::SUPPORTED),
        })
    }

    async fn read(&self, off: u64, len: usize) -> io::Result<Bytes> {
        // Not zeroed first, as the target's read buffers are not: the
        // kernel fills what it reads, and only a rest left to the
        // blocking pool is zeroed before it is read into.
        let mut buf = Vec::with_capacity(len);
        let mut done = 0;
        if self.nowait.load(Ordering::Relaxed) {
            match nowait::read(&self.file, &mut buf.spare_capacity_mut()[..len], off) {
                Ok(n) => done = n.min(len),
                Err(_) => self.nowait.store(false, Ordering::Relaxed),
            }
        }
        // SAFETY: preadv2 initialised the first `done` bytes.
        unsafe { buf.set_len(done) };
        if done < len {
            buf.resize(len, 0);
            let file = self.file.clone();
            buf = blocking(move || {
                file.read_exact_at(&mut buf[done..], off + done as u64)?;
                Ok(buf)
            })
            .await?;
        }
        Ok(Bytes::from(buf))
    }

    async fn write(&self, off: u64, data: Bytes, fua: bool) -> io::Result<()> {
        let mut done = 0;
        if self.nowait.load(Ordering::Relaxed) {
            match nowait::write(&self.file, &data, off) {
                Ok(n) => done = n,
                Err(_) => self.nowait.store(false, Ordering::Relaxed),
            }
        }
        if done < data.len() || fua {
            let file = self.file.clone();
            blocking(move || {
                file.write_all_at(&data[done..], off + done as u64)?;
                if fua {
                    file.sync_data()?;
                }
                Ok(())
            })
            .await?;
        }
        Ok(())
    }
}

/// Runs `f` on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(io::Error::other(format!("file I/O task failed: {e}"))))
}

impl Device {
    /// The LUN number (0 for a local file).
    pub fn lun(&self) -> u16 {
        match self {
            Device::Lun(d) => d.lun(),
            Device::File(_) => 0,
        }
    }

    /// Blocks and block length.
    pub async fn capacity(&self) -> Result<(u64, u32), DeviceError> {
        match self {
            Device::Lun(d) => {
                let c = d.capacity().await?;
                Ok((c.blocks, c.block_length))
            }
            Device::File(f) => Ok((f.blocks, FILE_BLOCK_LEN)),
        }
    }

    /// Reads `blocks` blocks of `block_len` bytes at `lba`.
    pub async fn read(&self, lba: u64, blocks: u32, block_len: u32) -> Result<Bytes, DeviceError> {
        match self {
            Device::Lun(d) => Ok(d.execute(cdb::read(lba, blocks, block_len, false)).await?),
            Device::File(f) => {
                let len = blocks as usize * block_len as usize;
                Ok(f.read(lba * u64::from(block_len), len).await?)
            }
        }
    }

    /// Writes `data`, whole blocks of `block_len` bytes, at `lba`.
    pub async fn write(
        &self,
        lba: u64,
        block_len: u32,
        data: Bytes,
        fua: bool,
    ) -> Result<(), DeviceError> {
        match self {
            Device::Lun(d) => {
                let blocks = (data.len() / block_len as usize) as u32;
                d.execute(cdb::write(lba, blocks, data, fua)).await?;
                Ok(())
            }
            Device::File(f) => Ok(f.write(lba * u64::from(block_len), data, fua).await?),
        }
    }
}

/// `preadv2` / `pwritev2` with `RWF_NOWAIT`: what the page cache can do at
/// once, never a wait for the device. `Ok(n)` is how much was done (a
/// short count or EAGAIN leaves the rest to the blocking pool); an error
/// means the file does not take the flag at all.
mod nowait {
    use std::fs::File;
    use std::io;
    use std::mem::MaybeUninit;

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    pub const SUPPORTED: bool = true;
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    pub const SUPPORTED: bool = false;

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    fn outcome(n: isize) -> io::Result<usize> {
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EOPNOTSUPP) | Some(libc::EINVAL) | Some(libc::ENOSYS) => Err(e),
            // EAGAIN and real errors alike: the blocking path repeats the
            // I/O and reports a real error from there.
            _ => Ok(0),
        }
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    pub fn read(f: &File, buf: &mut [MaybeUninit<u8>], off: u64) -> io::Result<usize> {
        use std::os::unix::io::AsRawFd;
        let iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: one iovec describing `buf`, valid for writes of its
        // length for the duration of the call (the kernel only writes it,
        // so it need not be initialised); the fd is open.
        let n =
            unsafe { libc::preadv2(f.as_raw_fd(), &iov, 1, off as libc::off_t, libc::RWF_NOWAIT) };
        outcome(n)
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    pub fn write(f: &File, data: &[u8], off: u64) -> io::Result<usize> {
        use std::os::unix::io::AsRawFd;
        let iov = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        // SAFETY: one iovec describing `data`, valid for reads of its
        // length for the duration of the call (the kernel only reads it);
        // the fd is open.
        let n =
            unsafe { libc::pwritev2(f.as_raw_fd(), &iov, 1, off as libc::off_t, libc::RWF_NOWAIT) };
        outcome(n)
    }

    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    pub fn read(_: &File, _: &mut [MaybeUninit<u8>], _: u64) -> io::Result<usize> {
        Err(io::ErrorKind::Unsupported.into())
    }

    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    pub fn write(_: &File, _: &[u8], _: u64) -> io::Result<usize> {
        Err(io::ErrorKind::Unsupported.into())
    }
}
