//! IPv4 prefixes (`198.51.100.0/24`): parsing, membership, overlap and address ranges.

use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

/// An IPv4 network prefix whose host bits are zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ipv4Cidr {
    network: Ipv4Addr,
    prefix_len: u8,
}

/// Why a prefix was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// Not `a.b.c.d/n`.
    #[error("{0:?} is not an IPv4 prefix like 198.51.100.0/24")]
    Syntax(String),
    /// Host bits are set.
    #[error("{given:?} has host bits set; the network is {network}")]
    HostBits {
        /// As given.
        given: String,
        /// The prefix with host bits cleared.
        network: String,
    },
}

impl Ipv4Cidr {
    /// A prefix from its parts; host bits are cleared.
    ///
    /// # Panics
    /// When `prefix_len > 32`.
    pub fn new(addr: Ipv4Addr, prefix_len: u8) -> Self {
        assert!(prefix_len <= 32, "prefix length {prefix_len} > 32");
        Self {
            network: Ipv4Addr::from(u32::from(addr) & mask(prefix_len)),
            prefix_len,
        }
    }

    /// The network address.
    pub fn network(&self) -> Ipv4Addr {
        self.network
    }

    /// The prefix length.
    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    /// The netmask (`255.255.255.0` for /24).
    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(mask(self.prefix_len))
    }

    /// The last address of the prefix (the broadcast address when prefix < 31).
    pub fn last(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network) | !mask(self.prefix_len))
    }

    /// Whether `addr` lies in the prefix.
    pub fn contains(&self, addr: Ipv4Addr) -> bool {
        u32::from(addr) & mask(self.prefix_len) == u32::from(self.network)
    }

    /// Whether the two prefixes share any address.
    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        self.contains(other.network) || other.contains(self.network)
    }

    /// The usable host range: without network and broadcast addresses for prefixes up to /30.
    pub fn hosts(&self) -> (Ipv4Addr, Ipv4Addr) {
        let (first, last) = (u32::from(self.network), u32::from(self.last()));
        if self.prefix_len >= 31 {
            (Ipv4Addr::from(first), Ipv4Addr::from(last))
        } else {
            (Ipv4Addr::from(first + 1), Ipv4Addr::from(last - 1))
        }
    }
}

/// The netmask of a prefix length (at most 32) as a number: `24` → `0xffffff00`.
pub(crate) fn mask(prefix_len: u8) -> u32 {
    if prefix_len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix_len))
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let syntax = || CidrError::Syntax(text.to_string());
        let (addr, len) = text.split_once('/').ok_or_else(syntax)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| syntax())?;
        if len.is_empty() || len.len() > 2 || !len.bytes().all(|b| b.is_ascii_digit()) {
            return Err(syntax());
        }
        let len: u8 = len.parse().map_err(|_| syntax())?;
        if len > 32 {
            return Err(syntax());
        }
        let cidr = Self::new(addr, len);
        if cidr.network != addr {
            return Err(CidrError::HostBits {
                given: text.to_string(),
                network: cidr.to_string(),
            });
        }
        Ok(cidr)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix_len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_measures() {
        let c: Ipv4Cidr = "198.51.100.0/24".parse().unwrap();
        assert_eq!(c.netmask(), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(c.last(), Ipv4Addr::new(198, 51, 100, 255));
        assert_eq!(
            c.hosts(),
            (
                Ipv4Addr::new(198, 51, 100, 1),
                Ipv4Addr::new(198, 51, 100, 254)
            )
        );
        assert!(c.contains(Ipv4Addr::new(198, 51, 100, 77)));
        assert!(!c.contains(Ipv4Addr::new(198, 51, 101, 1)));
        assert_eq!(c.to_string(), "198.51.100.0/24");
        let h: Ipv4Cidr = "10.0.0.8/31".parse().unwrap();
        assert_eq!(
            h.hosts(),
            (Ipv4Addr::new(10, 0, 0, 8), Ipv4Addr::new(10, 0, 0, 9))
        );
    }

    #[test]
    fn refuses_bad_prefixes() {
        for bad in [
            "198.51.100.0",
            "198.51.100.0/33",
            "x/24",
            "198.51.100.0/",
            "1.2.3.4/+1",
        ] {
            assert!(
                matches!(bad.parse::<Ipv4Cidr>(), Err(CidrError::Syntax(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            "198.51.100.7/24".parse::<Ipv4Cidr>(),
            Err(CidrError::HostBits { .. })
        ));
    }

    #[test]
    fn overlap() {
        let a: Ipv4Cidr = "10.0.0.0/16".parse().unwrap();
        let b: Ipv4Cidr = "10.0.5.0/24".parse().unwrap();
        let c: Ipv4Cidr = "10.1.0.0/24".parse().unwrap();
        assert!(a.overlaps(&b) && b.overlaps(&a));
        assert!(!a.overlaps(&c));
    }
}
