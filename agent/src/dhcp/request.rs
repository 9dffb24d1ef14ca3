//! Parsing a client's datagram: the fixed BOOTP header and the few options the server needs.
//!
//! This is a small panic-free parser of our own: the datagram comes from any host on the
//! network, and only the message type (53), requested address (50), server identifier (54)
//! and client identifier (61) matter here. Options are scanned as type-length-value, with
//! split options concatenated (RFC 3396); an option running past the end makes the datagram
//! malformed.

use std::net::Ipv4Addr;

use dhcproto::v4::{MessageType, MAGIC};

/// The fixed BOOTP header (236 bytes) plus the magic cookie.
pub(crate) const MIN_REQUEST_LEN: usize = 240;

/// The largest request accepted: a full Ethernet frame's worth. Requests are small; anything
/// larger is not a real client.
pub(crate) const MAX_REQUEST_LEN: usize = 1500;

/// BOOTREQUEST (RFC 951).
const BOOTREQUEST: u8 = 1;
/// Ethernet hardware type and address length.
const HTYPE_ETHERNET: u8 = 1;
const HLEN_ETHERNET: u8 = 6;

const OPT_PAD: u8 = 0;
const OPT_END: u8 = 255;
const OPT_REQUESTED_IP: u8 = 50;
const OPT_MESSAGE_TYPE: u8 = 53;
const OPT_SERVER_ID: u8 = 54;
const OPT_CLIENT_ID: u8 = 61;

/// A client request that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Request {
    /// The DHCP message type (option 53).
    pub kind: MessageType,
    /// The transaction id.
    pub xid: u32,
    /// The BOOTP flags (broadcast bit).
    pub flags: u16,
    /// The client's current address, when it has one.
    pub ciaddr: Ipv4Addr,
    /// The relay agent's address, when relayed.
    pub giaddr: Ipv4Addr,
    /// The client's MAC.
    pub mac: [u8; 6],
    /// Option 50.
    pub requested_ip: Option<Ipv4Addr>,
    /// Option 54.
    pub server_id: Option<Ipv4Addr>,
    /// Option 61, echoed in replies (RFC 6842).
    pub client_id: Option<Vec<u8>>,
}

impl Request {
    /// Whether the client asked for broadcast replies.
    pub fn wants_broadcast(&self) -> bool {
        self.flags & 0x8000 != 0
    }
}

/// The transaction id of a datagram, 0 when it is too short to have one (for logging).
pub(crate) fn xid_of(datagram: &[u8]) -> u32 {
    datagram
        .get(4..8)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Reads the IPv4 address at `at` (the caller checked the length).
fn addr(datagram: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(
        datagram[at],
        datagram[at + 1],
        datagram[at + 2],
        datagram[at + 3],
    )
}

/// A 4-byte option value as an address; any other length is malformed.
fn addr_option(value: Option<Vec<u8>>) -> Result<Option<Ipv4Addr>, &'static str> {
    match value.as_deref() {
        None => Ok(None),
        Some(&[a, b, c, d]) => Ok(Some(Ipv4Addr::new(a, b, c, d))),
        Some(_) => Err("malformed address option"),
    }
}

/// Decodes and checks a datagram: size, magic cookie, BOOTREQUEST, Ethernet, a message type.
///
/// # Errors
///
/// Why the datagram is not a request this server answers.
pub(crate) fn parse(datagram: &[u8]) -> Result<Request, &'static str> {
    if datagram.len() < MIN_REQUEST_LEN {
        return Err("too short for a DHCP message");
    }
    if datagram.len() > MAX_REQUEST_LEN {
        return Err("oversized");
    }
    if datagram[236..240] != MAGIC {
        return Err("no DHCP magic cookie");
    }
    if datagram[0] != BOOTREQUEST {
        return Err("not a BOOTREQUEST");
    }
    if datagram[1] != HTYPE_ETHERNET || datagram[2] != HLEN_ETHERNET {
        return Err("not Ethernet");
    }
    let mut message_type = None;
    let mut requested_ip = None;
    let mut server_id = None;
    let mut client_id = None;
    let mut rest = &datagram[MIN_REQUEST_LEN..];
    while let Some((&code, after)) = rest.split_first() {
        match code {
            OPT_PAD => rest = after,
            OPT_END => break,
            _ => {
                let Some((&len, after)) = after.split_first() else {
                    return Err("truncated option");
                };
                let Some(value) = after.get(..usize::from(len)) else {
                    return Err("truncated option");
                };
                rest = &after[usize::from(len)..];
                let slot = match code {
                    OPT_MESSAGE_TYPE => &mut message_type,
                    OPT_REQUESTED_IP => &mut requested_ip,
                    OPT_SERVER_ID => &mut server_id,
                    OPT_CLIENT_ID => &mut client_id,
                    _ => continue,
                };
                // A repeated option continues the previous one (RFC 3396).
                slot.get_or_insert_with(Vec::new).extend_from_slice(value);
            }
        }
    }
    let kind = match message_type.as_deref() {
        None => return Err("no DHCP message type (plain BOOTP)"),
        Some(&[kind]) => MessageType::from(kind),
        Some(_) => return Err("malformed message type option"),
    };
    let mut mac = [0u8; 6];
    mac.copy_from_slice(&datagram[28..34]);
    Ok(Request {
        kind,
        xid: xid_of(datagram),
        flags: u16::from_be_bytes([datagram[10], datagram[11]]),
        ciaddr: addr(datagram, 12),
        giaddr: addr(datagram, 24),
        mac,
        requested_ip: addr_option(requested_ip)?,
        server_id: addr_option(server_id)?,
        client_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A BOOTREQUEST header (xid, broadcast flag, ciaddr, giaddr, MAC) followed by `options`.
    fn datagram(options: &[u8]) -> Vec<u8> {
        let mut d = vec![0u8; MIN_REQUEST_LEN];
        d[0] = BOOTREQUEST;
        d[1] = HTYPE_ETHERNET;
        d[2] = HLEN_ETHERNET;
        d[4..8].copy_from_slice(&[0xde, 0xad, 0xbe, 0xef]);
        d[10] = 0x80;
        d[12..16].copy_from_slice(&[198, 51, 100, 10]);
        d[24..28].copy_from_slice(&[203, 0, 113, 1]);
        d[28..34].copy_from_slice(&[2, 0, 0, 0, 0, 7]);
        d[236..240].copy_from_slice(&MAGIC);
        d.extend_from_slice(options);
        d
    }

    #[test]
    fn header_and_options() {
        #[rustfmt::skip]
        let req = parse(&datagram(&[
            53, 1, 3,
            0, 0,
            50, 4, 198, 51, 100, 10,
            12, 3, b'v', b'm', b'1',
            54, 4, 198, 51, 100, 2,
            61, 2, 1, 2,
            61, 1, 3, // continues option 61
            255,
            61, 9, // after END: not read
        ]))
        .unwrap();
        assert_eq!(
            req,
            Request {
                kind: MessageType::Request,
                xid: 0xdead_beef,
                flags: 0x8000,
                ciaddr: Ipv4Addr::new(198, 51, 100, 10),
                giaddr: Ipv4Addr::new(203, 0, 113, 1),
                mac: [2, 0, 0, 0, 0, 7],
                requested_ip: Some(Ipv4Addr::new(198, 51, 100, 10)),
                server_id: Some(Ipv4Addr::new(198, 51, 100, 2)),
                client_id: Some(vec![1, 2, 3]),
            }
        );
        assert!(req.wants_broadcast());
        // Options may end without END.
        assert_eq!(
            parse(&datagram(&[53, 1, 1])).unwrap().kind,
            MessageType::Discover
        );
    }

    #[test]
    fn bad_options_are_refused() {
        for (options, reason) in [
            (&[][..], "no DHCP message type (plain BOOTP)"),
            (
                &[12, 1, b'x', 255][..],
                "no DHCP message type (plain BOOTP)",
            ),
            (&[53][..], "truncated option"),
            (&[53, 2, 1][..], "truncated option"),
            (&[53, 2, 1, 1][..], "malformed message type option"),
            (&[53, 1, 3, 50, 3, 1, 2, 3][..], "malformed address option"),
            (&[53, 1, 3, 54, 0][..], "malformed address option"),
        ] {
            assert_eq!(parse(&datagram(options)), Err(reason), "{options:?}");
        }
    }
}
