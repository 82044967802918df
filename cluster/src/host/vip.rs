//! The kernel address backend of the ip-address resource: with a node's
//! `public-interface` set in the cluster file, a virtual IP going online is
//! added to that interface (`ip address add ADDR/32 dev IFACE`) and
//! announced with gratuitous ARP (`arping -U`), as the reference cluster's
//! IP Address resource does, so neighbours that cached the previous
//! owner's hardware address send to this node at once; going offline, the
//! address is removed again. Without `public-interface` the address must
//! already be configured on the host (the single-stack lab's loopback),
//! and nothing here runs. README "Network-namespace hosts"; docs/hosts.md.
//!
//! A host address (/32, /128 for IPv6) needs no subnet mask property: the
//! interface's own address already routes the public subnet, and the
//! kernel answers ARP for any local address on the interface it arrives on.

use std::net::IpAddr;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// How long `ip` and `arping` may take before the step counts as failed.
const TOOL_LIMIT: Duration = Duration::from_secs(5);

/// Gratuitous ARP packets sent when an address comes online (one may be
/// lost on a busy bridge; the reference cluster also sends more than one).
const ANNOUNCEMENTS: &str = "2";

/// Why a virtual IP could not be added to or removed from the interface.
#[derive(Debug, thiserror::Error)]
pub enum VipError {
    /// The `public-interface` value cannot name a network interface.
    #[error("public-interface {0:?} is not an interface name (1 to 15 characters, no '/', ':' or spaces)")]
    BadInterface(String),
    /// `ip` could not be run at all (iproute2 missing).
    #[error("cannot run ip (iproute2): {0}")]
    NoTool(std::io::Error),
    /// `ip` refused the change; its message.
    #[error("ip address {verb} {address} dev {interface}: {message}")]
    Refused {
        verb: &'static str,
        address: IpAddr,
        interface: String,
        message: String,
    },
    /// `ip` did not finish in time.
    #[error("ip address {verb} {address} did not finish within {TOOL_LIMIT:?}")]
    Timeout { verb: &'static str, address: IpAddr },
}

/// A virtual IP this node added to its public interface; dropping it does
/// not remove the address, [`KernelAddress::release`] does.
#[derive(Debug)]
pub struct KernelAddress {
    pub address: IpAddr,
    pub interface: String,
}

/// Whether `name` can be a Linux interface name (IFNAMSIZ is 16 with the
/// terminating NUL).
fn valid_interface(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 15
        && name
            .chars()
            .all(|c| c.is_ascii_graphic() && c != '/' && c != ':')
}

/// The prefix length of a host address of `address`'s family.
fn host_prefix(address: IpAddr) -> u8 {
    match address {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// Runs `ip address VERB ADDR/PREFIX dev IFACE`.
async fn ip_address(verb: &'static str, address: IpAddr, interface: &str) -> Result<(), VipError> {
    let mut cmd = Command::new("ip");
    if address.is_ipv6() {
        cmd.arg("-6");
    }
    cmd.args(["address", verb])
        .arg(format!("{address}/{}", host_prefix(address)))
        .args(["dev", interface]);
    if address.is_ipv6() && verb == "add" {
        // No duplicate address detection: the cluster already decided
        // that this node is the address's only owner.
        cmd.arg("nodad");
    }
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let out = match tokio::time::timeout(TOOL_LIMIT, cmd.output()).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(VipError::NoTool(e)),
        Err(_) => return Err(VipError::Timeout { verb, address }),
    };
    if out.status.success() {
        return Ok(());
    }
    Err(VipError::Refused {
        verb,
        address,
        interface: interface.to_string(),
        message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
    })
}

impl KernelAddress {
    /// Adds `address` to `interface` and announces it. An address that is
    /// already there (left by a previous life of this node that was
    /// killed) is taken over.
    pub async fn claim(address: IpAddr, interface: &str) -> Result<KernelAddress, VipError> {
        if !valid_interface(interface) {
            return Err(VipError::BadInterface(interface.to_string()));
        }
        match ip_address("add", address, interface).await {
            Ok(()) => {}
            Err(VipError::Refused { message, .. })
                if message.contains("already assigned") || message.contains("File exists") =>
            {
                tracing::info!(%address, interface, "virtual IP was already on the interface; taking it over");
            }
            Err(e) => return Err(e),
        }
        tracing::info!(%address, interface, "virtual IP added to the interface");
        announce(address, interface).await;
        Ok(KernelAddress {
            address,
            interface: interface.to_string(),
        })
    }

    /// Removes the address from the interface; a failure is logged (the
    /// resource is going offline either way).
    pub async fn release(self) {
        match ip_address("del", self.address, &self.interface).await {
            Ok(()) => {
                tracing::info!(address = %self.address, interface = %self.interface, "virtual IP removed from the interface")
            }
            Err(e) => {
                tracing::warn!(address = %self.address, error = %e, "could not remove the virtual IP")
            }
        }
    }
}

/// Gratuitous ARP for an IPv4 `address` on `interface` (`arping -U`: an
/// ARP request whose sender and target are both the address), so every
/// neighbour on the segment updates its cache entry to this host. IPv6
/// neighbours learn the move by neighbour discovery; a missing `arping` is
/// logged and the neighbours learn it when their entries go stale.
async fn announce(address: IpAddr, interface: &str) {
    if address.is_ipv6() {
        return;
    }
    let mut cmd = Command::new("arping");
    cmd.args(["-U", "-c", ANNOUNCEMENTS, "-I", interface])
        .arg(address.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    match tokio::time::timeout(TOOL_LIMIT, cmd.output()).await {
        Ok(Ok(out)) if out.status.success() => {
            tracing::info!(%address, interface, "gratuitous ARP sent");
        }
        Ok(Ok(out)) => tracing::warn!(
            %address, interface,
            error = %String::from_utf8_lossy(&out.stderr).trim(),
            "gratuitous ARP failed"
        ),
        Ok(Err(e)) => tracing::warn!(
            %address, error = %e,
            "cannot run arping (iputils-arping); neighbours learn the move when their ARP entries expire"
        ),
        Err(_) => tracing::warn!(%address, "arping did not finish in time"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names_are_checked_before_ip_sees_them() {
        for ok in ["pub", "eth0", "br-lab.10", "abcdefghijklmno"] {
            assert!(valid_interface(ok), "{ok}");
        }
        for bad in ["", "abcdefghijklmnop", "a b", "a/b", "eth0:1", "x\n"] {
            assert!(!valid_interface(bad), "{bad:?}");
        }
    }

    #[test]
    fn virtual_ips_are_host_addresses() {
        assert_eq!(host_prefix("10.77.2.101".parse().unwrap()), 32);
        assert_eq!(host_prefix("fd00::65".parse().unwrap()), 128);
    }
}
