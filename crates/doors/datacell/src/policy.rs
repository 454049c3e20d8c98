//! Where DataCell's receptors and emitters may reach: the network policy. A receptor or
//! emitter that listens binds only to the server's own `--bind` address (or loopback, when
//! the server is local); one that connects out (an active emitter, or an active receptor
//! that dials its sensor) connects only to addresses an allow-list permits (`--emitter-allow`,
//! loopback by default). SQL can therefore neither open a port on another interface nor make
//! the server connect into the network unless the operator allowed it.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

/// An address block, `10.0.0.0/8` or `fd00::/8` (a bare address is a block of one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// The block of addresses sharing the first `prefix` bits of `addr`.
    pub fn new(addr: IpAddr, prefix: u8) -> Result<Cidr, String> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if prefix > max {
            return Err(format!("prefix /{prefix} is longer than {max} bits"));
        }
        Ok(Cidr { addr, prefix })
    }

    /// Whether `ip` is in the block (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (
                a,
                Some(
                    p.parse::<u8>()
                        .map_err(|_| format!("{s:?}: the prefix after '/' must be a number"))?,
                ),
            ),
            None => (s.trim(), None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("{s:?} is not an address or address/prefix"))?;
        let prefix = prefix.unwrap_or(if addr.is_ipv4() { 32 } else { 128 });
        Cidr::new(addr, prefix).map_err(|e| format!("{s:?}: {e}"))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Where adapters may listen and connect.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkPolicy {
    /// The server's `--bind` address: the only one adapters may listen on (any address when
    /// it is unspecified, `0.0.0.0`/`::`).
    pub listen: IpAddr,
    /// Where adapters may connect.
    pub connect: Vec<Cidr>,
}

impl Default for NetworkPolicy {
    /// Local only: listen on 127.0.0.1, connect to loopback.
    fn default() -> Self {
        NetworkPolicy {
            listen: IpAddr::V4(Ipv4Addr::LOCALHOST),
            connect: loopback(),
        }
    }
}

/// `127.0.0.0/8` and `::1`.
pub fn loopback() -> Vec<Cidr> {
    vec![
        Cidr {
            addr: IpAddr::V4(Ipv4Addr::new(127, 0, 0, 0)),
            prefix: 8,
        },
        Cidr {
            addr: IpAddr::V6(Ipv6Addr::LOCALHOST),
            prefix: 128,
        },
    ]
}

impl NetworkPolicy {
    /// Whether an adapter may listen on `ip`, and if not, why.
    pub fn check_listen(&self, ip: IpAddr) -> Result<(), String> {
        if self.listen.is_unspecified()
            || ip == self.listen
            || (ip.is_loopback() && self.listen.is_loopback())
        {
            return Ok(());
        }
        Err(format!(
            "receptors and emitters listen only on the server's address {} (its --bind), not {ip}",
            self.listen
        ))
    }

    /// Whether an adapter may connect to `ip`, and if not, why.
    pub fn check_connect(&self, ip: IpAddr) -> Result<(), String> {
        if self.connect.iter().any(|c| c.contains(ip)) {
            return Ok(());
        }
        let allowed: Vec<String> = self.connect.iter().map(ToString::to_string).collect();
        Err(format!(
            "connecting to {ip} is not allowed: the server connects only to {} (extend it with \
             --emitter-allow ADDRESS/PREFIX)",
            if allowed.is_empty() {
                "nothing".to_string()
            } else {
                allowed.join(", ")
            }
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an address")
    }

    #[test]
    fn blocks_contain_their_addresses() {
        let c: Cidr = "10.1.0.0/16".parse().expect("cidr");
        assert!(c.contains(ip("10.1.200.3")) && !c.contains(ip("10.2.0.1")));
        assert!(c.contains(ip("::ffff:10.1.0.9")), "IPv4-mapped");
        assert!(!c.contains(ip("fd00::1")));
        let all: Cidr = "0.0.0.0/0".parse().expect("cidr");
        assert!(all.contains(ip("203.0.113.9")));
        let one: Cidr = "192.0.2.7".parse().expect("cidr");
        assert!(one.contains(ip("192.0.2.7")) && !one.contains(ip("192.0.2.8")));
        let v6: Cidr = "fd00::/8".parse().expect("cidr");
        assert!(v6.contains(ip("fd12::1")) && !v6.contains(ip("fe80::1")));
        for bad in ["10.0.0.0/33", "x/8", "10.0.0.0/", "::/129", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_default_policy_is_local() {
        let p = NetworkPolicy::default();
        assert!(p.check_listen(ip("127.0.0.1")).is_ok());
        assert!(p.check_listen(ip("127.0.0.2")).is_ok());
        let e = p.check_listen(ip("0.0.0.0")).expect_err("all interfaces");
        assert!(e.contains("--bind"), "{e}");
        assert!(p.check_connect(ip("127.0.0.1")).is_ok() && p.check_connect(ip("::1")).is_ok());
        let e = p
            .check_connect(ip("169.254.169.254"))
            .expect_err("metadata");
        assert!(e.contains("--emitter-allow"), "{e}");
        let open = NetworkPolicy {
            listen: ip("0.0.0.0"),
            connect: vec!["0.0.0.0/0".parse().expect("cidr")],
        };
        assert!(open.check_listen(ip("10.0.0.5")).is_ok());
        assert!(open.check_connect(ip("10.0.0.5")).is_ok());
    }
}
