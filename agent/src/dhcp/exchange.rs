//! One request in, at most one reply out: the static-lease decision and the reply.
//!
//! This is pure: no socket, no clock. [`handle`] takes the datagram as received and tells the
//! server what to send and where.

use std::net::{Ipv4Addr, SocketAddrV4};

use dhcproto::v4::{
    DhcpOption, Flags, HType, Message, MessageType, Opcode, CLIENT_PORT, SERVER_PORT,
};
use dhcproto::{Encodable, Encoder};

use super::lease::{Lease, LeaseSource};
use super::options::{lease_options, netmask};
use super::request::{parse, xid_of, Request};

/// Replies are padded to the BOOTP minimum that some clients insist on.
const MIN_REPLY_LEN: usize = 300;

/// What the server does with one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Exchange {
    /// The DHCP message type received, when the datagram was a well-formed DHCP request.
    pub received: Option<MessageType>,
    /// The client's hardware address, when the datagram got that far.
    pub mac: Option<[u8; 6]>,
    /// The transaction id (0 when the datagram was too short to have one).
    pub xid: u32,
    /// What to do.
    pub action: Action,
}

/// The outcome of one datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Action {
    /// Send `packet` to `to`.
    Reply {
        /// OFFER, ACK or NAK.
        kind: MessageType,
        /// The encoded reply.
        packet: Vec<u8>,
        /// Where it goes: the relay, the client's address or the broadcast address.
        to: SocketAddrV4,
        /// The address offered or acknowledged (unspecified for NAK and INFORM).
        ip: Ipv4Addr,
    },
    /// A RELEASE or DECLINE from a known client: logged and counted, nothing is sent.
    Noted,
    /// No reply, for this reason.
    Ignored(&'static str),
}

/// Decides what to do with `datagram`, received by the server at `server_ip`.
pub(crate) fn handle(datagram: &[u8], server_ip: Ipv4Addr, source: &dyn LeaseSource) -> Exchange {
    let xid = xid_of(datagram);
    let ignored = |received, mac, reason| Exchange {
        received,
        mac,
        xid,
        action: Action::Ignored(reason),
    };
    let req = match parse(datagram) {
        Ok(req) => req,
        Err(reason) => return ignored(None, None, reason),
    };
    let (received, mac) = (Some(req.kind), Some(req.mac));
    if !matches!(
        req.kind,
        MessageType::Discover
            | MessageType::Request
            | MessageType::Release
            | MessageType::Decline
            | MessageType::Inform
    ) {
        return ignored(received, mac, "not a client message");
    }
    let Some(lease) = source.lease_for(req.mac) else {
        return ignored(received, mac, "no port has this MAC");
    };
    if netmask(lease.prefix_len).is_none() {
        return ignored(received, mac, "the lease's prefix length is above 32");
    }
    // A message naming a server names the one the client chose; when that is another DHCP
    // server, the client has moved on.
    if req.server_id.is_some_and(|id| id != server_ip) {
        return ignored(received, mac, "addressed to another server");
    }
    let action = match req.kind {
        MessageType::Discover => reply(&req, MessageType::Offer, server_ip, &lease),
        MessageType::Request => {
            // SELECTING and INIT-REBOOT name the address in option 50; RENEWING and
            // REBINDING in ciaddr.
            if req.requested_ip.unwrap_or(req.ciaddr) == lease.ip {
                reply(&req, MessageType::Ack, server_ip, &lease)
            } else {
                reply(&req, MessageType::Nak, server_ip, &lease)
            }
        }
        MessageType::Inform => reply(&req, MessageType::Ack, server_ip, &lease),
        _ => Action::Noted,
    };
    Exchange {
        received,
        mac,
        xid,
        action,
    }
}

/// Builds the reply of `kind` (OFFER, ACK or NAK) to `req` and where to send it.
fn reply(req: &Request, kind: MessageType, server_ip: Ipv4Addr, lease: &Lease) -> Action {
    let inform = req.kind == MessageType::Inform;
    let relayed = !req.giaddr.is_unspecified();
    let yiaddr = match kind {
        MessageType::Nak => Ipv4Addr::UNSPECIFIED,
        _ if inform => Ipv4Addr::UNSPECIFIED,
        _ => lease.ip,
    };
    // ciaddr is echoed in an ACK (renewing, rebinding, inform), zero otherwise (RFC 2131 table 3).
    let ciaddr = if kind == MessageType::Ack {
        req.ciaddr
    } else {
        Ipv4Addr::UNSPECIFIED
    };
    let mut msg = Message::new_with_id(
        req.xid,
        ciaddr,
        yiaddr,
        Ipv4Addr::UNSPECIFIED,
        req.giaddr,
        &req.mac,
    );
    let mut flags = Flags::new(req.flags);
    if kind == MessageType::Nak && relayed {
        // A relay must broadcast a NAK: the client's address is wrong by definition.
        flags = flags.set_broadcast();
    }
    msg.set_opcode(Opcode::BootReply)
        .set_htype(HType::Eth)
        .set_flags(flags);
    let opts = msg.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    opts.insert(DhcpOption::ServerIdentifier(server_ip));
    // RFC 6842: the client identifier is echoed.
    if let Some(id) = &req.client_id {
        opts.insert(DhcpOption::ClientIdentifier(id.clone()));
    }
    if kind == MessageType::Nak {
        opts.insert(DhcpOption::Message(
            "requested address is not this client's".to_owned(),
        ));
    } else {
        for opt in lease_options(lease, !inform) {
            opts.insert(opt);
        }
    }
    let mut packet = Vec::with_capacity(MIN_REPLY_LEN);
    if msg.encode(&mut Encoder::new(&mut packet)).is_err() {
        return Action::Ignored("the reply could not be encoded");
    }
    if packet.len() < MIN_REPLY_LEN {
        packet.resize(MIN_REPLY_LEN, 0);
    }
    Action::Reply {
        kind,
        packet,
        to: destination(req, kind),
        ip: yiaddr,
    }
}

/// Where a reply goes: to the relay (giaddr) when set; a NAK is broadcast; to ciaddr when the
/// client has an address and did not ask for broadcast; else to the broadcast address (the
/// socket is bound to the device, so it leaves on the right interface).
fn destination(req: &Request, kind: MessageType) -> SocketAddrV4 {
    let broadcast = SocketAddrV4::new(Ipv4Addr::BROADCAST, CLIENT_PORT);
    if !req.giaddr.is_unspecified() {
        SocketAddrV4::new(req.giaddr, SERVER_PORT)
    } else if kind == MessageType::Nak {
        broadcast
    } else if !req.ciaddr.is_unspecified() && !req.wants_broadcast() {
        SocketAddrV4::new(req.ciaddr, CLIENT_PORT)
    } else {
        broadcast
    }
}

/// Builds a client request — used by the tests and the benchmark's raw client.
pub fn client_request(
    kind: MessageType,
    mac: [u8; 6],
    xid: u32,
    ciaddr: Ipv4Addr,
    options: Vec<DhcpOption>,
) -> Vec<u8> {
    let mut msg = Message::new_with_id(
        xid,
        ciaddr,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac,
    );
    if ciaddr.is_unspecified() {
        msg.set_flags(Flags::default().set_broadcast());
    }
    msg.opts_mut().insert(DhcpOption::MessageType(kind));
    for opt in options {
        msg.opts_mut().insert(opt);
    }
    let mut buf = Vec::new();
    msg.encode(&mut Encoder::new(&mut buf))
        .expect("a client request encodes");
    buf
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use dhcproto::v4::OptionCode;
    use dhcproto::{Decodable, Decoder};

    use super::super::lease::HostRoute;
    use super::super::request::{MAX_REQUEST_LEN, MIN_REQUEST_LEN};
    use super::*;

    const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
    const GATEWAY: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
    const IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
    const MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x01];
    const STRANGER: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x99];

    struct Ports(HashMap<[u8; 6], Lease>);

    impl LeaseSource for Ports {
        fn lease_for(&self, mac: [u8; 6]) -> Option<Lease> {
            self.0.get(&mac).cloned()
        }
    }

    fn lease() -> Lease {
        Lease {
            mac: MAC,
            ip: IP,
            prefix_len: 24,
            gateway: Some(GATEWAY),
            dns: vec![
                Ipv4Addr::new(198, 51, 100, 53),
                Ipv4Addr::new(203, 0, 113, 53),
            ],
            mtu: Some(1450),
            hostname: Some("vm-1".into()),
            domain_name: Some("example.org".into()),
            host_routes: vec![HostRoute {
                destination: Ipv4Addr::new(169, 254, 169, 254),
                prefix_len: 32,
                nexthop: SERVER,
            }],
            lease_time: Duration::from_secs(86_400),
        }
    }

    fn ports() -> Ports {
        Ports(HashMap::from([(MAC, lease())]))
    }

    fn request(
        kind: MessageType,
        mac: [u8; 6],
        ciaddr: Ipv4Addr,
        opts: Vec<DhcpOption>,
    ) -> Vec<u8> {
        client_request(kind, mac, 0x1234_5678, ciaddr, opts)
    }

    /// The reply's fields, or a panic naming what happened instead.
    fn sent(exchange: &Exchange) -> (MessageType, Message, SocketAddrV4, Vec<u8>) {
        match &exchange.action {
            Action::Reply {
                kind, packet, to, ..
            } => {
                assert!(packet.len() >= MIN_REPLY_LEN, "{}", packet.len());
                let msg = Message::decode(&mut Decoder::new(packet)).unwrap();
                (*kind, msg, *to, packet.clone())
            }
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    /// The raw value of option `code` in an encoded message.
    fn raw_option(packet: &[u8], code: u8) -> Option<Vec<u8>> {
        let mut i = MIN_REQUEST_LEN;
        let mut value: Option<Vec<u8>> = None;
        while i < packet.len() {
            match packet[i] {
                0 => i += 1,
                255 => break,
                c => {
                    let len = usize::from(packet[i + 1]);
                    if c == code {
                        value
                            .get_or_insert_with(Vec::new)
                            .extend_from_slice(&packet[i + 2..i + 2 + len]);
                    }
                    i += 2 + len;
                }
            }
        }
        value
    }

    const BROADCAST: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::BROADCAST, 68);

    #[test]
    fn discover_gets_an_offer_with_every_option() {
        let ex = handle(
            &request(MessageType::Discover, MAC, Ipv4Addr::UNSPECIFIED, vec![]),
            SERVER,
            &ports(),
        );
        assert_eq!(ex.received, Some(MessageType::Discover));
        assert_eq!(ex.mac, Some(MAC));
        assert_eq!(ex.xid, 0x1234_5678);
        let (kind, msg, to, packet) = sent(&ex);
        assert_eq!(kind, MessageType::Offer);
        assert_eq!(to, BROADCAST);
        assert_eq!(msg.opcode(), Opcode::BootReply);
        assert_eq!(msg.xid(), 0x1234_5678);
        assert_eq!(msg.yiaddr(), IP);
        assert_eq!(msg.ciaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(msg.chaddr(), MAC);
        assert!(msg.flags().broadcast());
        let opts = msg.opts();
        assert_eq!(opts.msg_type(), Some(MessageType::Offer));
        let has = |opt: DhcpOption| assert!(opts.iter().any(|(_, o)| *o == opt), "{opt:?} missing");
        has(DhcpOption::ServerIdentifier(SERVER));
        has(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        has(DhcpOption::Router(vec![GATEWAY]));
        has(DhcpOption::DomainNameServer(lease().dns));
        has(DhcpOption::Hostname("vm-1".into()));
        has(DhcpOption::DomainName("example.org".into()));
        has(DhcpOption::InterfaceMtu(1450));
        has(DhcpOption::AddressLeaseTime(86_400));
        has(DhcpOption::Renewal(43_200));
        has(DhcpOption::Rebinding(75_600));
        #[rustfmt::skip]
        let routes = vec![32, 169, 254, 169, 254, 198, 51, 100, 2, 0, 198, 51, 100, 1];
        assert_eq!(raw_option(&packet, 121), Some(routes.clone()));
        assert_eq!(raw_option(&packet, 249), Some(routes));
    }

    #[test]
    fn no_routes_means_no_option_121() {
        let mut plain = lease();
        plain.host_routes.clear();
        let ports = Ports(HashMap::from([(MAC, plain)]));
        let ex = handle(
            &request(MessageType::Discover, MAC, Ipv4Addr::UNSPECIFIED, vec![]),
            SERVER,
            &ports,
        );
        let (_, _, _, packet) = sent(&ex);
        assert_eq!(raw_option(&packet, 121), None);
        assert_eq!(raw_option(&packet, 249), None);
        assert_eq!(raw_option(&packet, 3), Some(vec![198, 51, 100, 1]));
    }

    #[test]
    fn request_for_the_leased_address_is_acked() {
        // SELECTING: server id + requested address.
        let ex = handle(
            &request(
                MessageType::Request,
                MAC,
                Ipv4Addr::UNSPECIFIED,
                vec![
                    DhcpOption::ServerIdentifier(SERVER),
                    DhcpOption::RequestedIpAddress(IP),
                    DhcpOption::ClientIdentifier(vec![1, 2, 3]),
                ],
            ),
            SERVER,
            &ports(),
        );
        let (kind, msg, to, _) = sent(&ex);
        assert_eq!((kind, to, msg.yiaddr()), (MessageType::Ack, BROADCAST, IP));
        assert!(msg
            .opts()
            .iter()
            .any(|(_, o)| *o == DhcpOption::ClientIdentifier(vec![1, 2, 3])));
        assert!(msg.opts().contains(OptionCode::AddressLeaseTime));

        // RENEWING: ciaddr only, unicast back to it with ciaddr echoed.
        let ex = handle(
            &request(MessageType::Request, MAC, IP, vec![]),
            SERVER,
            &ports(),
        );
        let (kind, msg, to, _) = sent(&ex);
        assert_eq!(kind, MessageType::Ack);
        assert_eq!(to, SocketAddrV4::new(IP, 68));
        assert_eq!((msg.ciaddr(), msg.yiaddr()), (IP, IP));
    }

    #[test]
    fn request_for_another_address_is_naked() {
        let other = Ipv4Addr::new(198, 51, 100, 77);
        let cases = [
            // INIT-REBOOT with an address from a previous network.
            request(
                MessageType::Request,
                MAC,
                Ipv4Addr::UNSPECIFIED,
                vec![DhcpOption::RequestedIpAddress(other)],
            ),
            // SELECTING (our server id) with a wrong address.
            request(
                MessageType::Request,
                MAC,
                Ipv4Addr::UNSPECIFIED,
                vec![
                    DhcpOption::ServerIdentifier(SERVER),
                    DhcpOption::RequestedIpAddress(other),
                ],
            ),
            // RENEWING a stale address: the NAK is still broadcast.
            request(MessageType::Request, MAC, other, vec![]),
            // No address at all.
            request(MessageType::Request, MAC, Ipv4Addr::UNSPECIFIED, vec![]),
        ];
        for datagram in cases {
            let ex = handle(&datagram, SERVER, &ports());
            let (kind, msg, to, packet) = sent(&ex);
            assert_eq!(kind, MessageType::Nak);
            assert_eq!(to, BROADCAST);
            assert_eq!(msg.yiaddr(), Ipv4Addr::UNSPECIFIED);
            assert_eq!(msg.ciaddr(), Ipv4Addr::UNSPECIFIED);
            assert_eq!(msg.opts().msg_type(), Some(MessageType::Nak));
            assert!(msg
                .opts()
                .iter()
                .any(|(_, o)| *o == DhcpOption::ServerIdentifier(SERVER)));
            // A NAK carries no configuration.
            for code in [1, 3, 6, 51, 121] {
                assert_eq!(raw_option(&packet, code), None, "option {code} in a NAK");
            }
        }
    }

    #[test]
    fn request_for_another_server_is_ignored() {
        let ex = handle(
            &request(
                MessageType::Request,
                MAC,
                Ipv4Addr::UNSPECIFIED,
                vec![
                    DhcpOption::ServerIdentifier(Ipv4Addr::new(198, 51, 100, 3)),
                    DhcpOption::RequestedIpAddress(IP),
                ],
            ),
            SERVER,
            &ports(),
        );
        assert_eq!(ex.action, Action::Ignored("addressed to another server"));
    }

    #[test]
    fn relayed_requests_are_answered_to_the_relay() {
        let relay = Ipv4Addr::new(203, 0, 113, 1);
        let with_relay = |datagram: Vec<u8>| {
            let mut msg = Message::decode(&mut Decoder::new(&datagram)).unwrap();
            msg.set_giaddr(relay);
            let mut buf = Vec::new();
            msg.encode(&mut Encoder::new(&mut buf)).unwrap();
            buf
        };
        let discover = with_relay(request(
            MessageType::Discover,
            MAC,
            Ipv4Addr::UNSPECIFIED,
            vec![],
        ));
        let (kind, msg, to, _) = sent(&handle(&discover, SERVER, &ports()));
        assert_eq!(
            (kind, to),
            (MessageType::Offer, SocketAddrV4::new(relay, 67))
        );
        assert_eq!(msg.giaddr(), relay);

        let mut renew = Message::decode(&mut Decoder::new(&request(
            MessageType::Request,
            MAC,
            Ipv4Addr::new(203, 0, 113, 50),
            vec![],
        )))
        .unwrap();
        renew.set_giaddr(relay);
        let mut buf = Vec::new();
        renew.encode(&mut Encoder::new(&mut buf)).unwrap();
        let (kind, msg, to, _) = sent(&handle(&buf, SERVER, &ports()));
        assert_eq!((kind, to), (MessageType::Nak, SocketAddrV4::new(relay, 67)));
        assert!(
            msg.flags().broadcast(),
            "a relayed NAK must ask for broadcast"
        );
    }

    #[test]
    fn inform_gets_configuration_without_a_lease() {
        let ex = handle(
            &request(MessageType::Inform, MAC, IP, vec![]),
            SERVER,
            &ports(),
        );
        let (kind, msg, to, packet) = sent(&ex);
        assert_eq!(kind, MessageType::Ack);
        assert_eq!(to, SocketAddrV4::new(IP, 68));
        assert_eq!(msg.yiaddr(), Ipv4Addr::UNSPECIFIED);
        assert_eq!(msg.ciaddr(), IP);
        for code in [51, 58, 59] {
            assert_eq!(
                raw_option(&packet, code),
                None,
                "option {code} in an INFORM ACK"
            );
        }
        assert_eq!(raw_option(&packet, 1), Some(vec![255, 255, 255, 0]));
        assert!(raw_option(&packet, 121).is_some());
    }

    #[test]
    fn release_and_decline_are_noted_without_reply() {
        for kind in [MessageType::Release, MessageType::Decline] {
            let ex = handle(
                &request(kind, MAC, IP, vec![DhcpOption::ServerIdentifier(SERVER)]),
                SERVER,
                &ports(),
            );
            assert_eq!((ex.received, ex.action), (Some(kind), Action::Noted));
        }
    }

    #[test]
    fn unknown_mac_is_ignored() {
        for kind in [
            MessageType::Discover,
            MessageType::Request,
            MessageType::Inform,
            MessageType::Release,
        ] {
            let ex = handle(
                &request(kind, STRANGER, Ipv4Addr::UNSPECIFIED, vec![]),
                SERVER,
                &ports(),
            );
            assert_eq!(ex.received, Some(kind));
            assert_eq!(ex.mac, Some(STRANGER));
            assert_eq!(ex.action, Action::Ignored("no port has this MAC"));
        }
    }

    #[test]
    fn a_lease_with_a_bad_prefix_is_not_served() {
        let mut bad = lease();
        bad.prefix_len = 40;
        let ports = Ports(HashMap::from([(MAC, bad)]));
        let ex = handle(
            &request(MessageType::Discover, MAC, Ipv4Addr::UNSPECIFIED, vec![]),
            SERVER,
            &ports,
        );
        assert!(matches!(ex.action, Action::Ignored(_)), "{ex:?}");
    }

    #[test]
    fn malformed_packets_are_ignored() {
        let good = request(MessageType::Discover, MAC, Ipv4Addr::UNSPECIFIED, vec![]);
        let patched = |at: usize, value: u8| {
            let mut p = good.clone();
            p[at] = value;
            p
        };
        let mut oversized = good.clone();
        oversized.resize(MAX_REQUEST_LEN + 1, 0);
        let mut no_type = good.clone();
        no_type.truncate(MIN_REQUEST_LEN);
        no_type.push(255);
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (vec![], "too short for a DHCP message"),
            (good[..239].to_vec(), "too short for a DHCP message"),
            (oversized, "oversized"),
            (patched(236, 0), "no DHCP magic cookie"),
            (patched(0, 2), "not a BOOTREQUEST"),
            (patched(1, 6), "not Ethernet"),
            (patched(2, 16), "not Ethernet"),
            (patched(2, 255), "not Ethernet"),
            (no_type, "no DHCP message type (plain BOOTP)"),
            (
                request(MessageType::Offer, MAC, Ipv4Addr::UNSPECIFIED, vec![]),
                "not a client message",
            ),
        ];
        for (datagram, reason) in cases {
            let ex = handle(&datagram, SERVER, &ports());
            assert_eq!(ex.action, Action::Ignored(reason), "{datagram:?}");
        }
    }

    #[test]
    fn garbage_never_panics() {
        let good = request(
            MessageType::Request,
            MAC,
            Ipv4Addr::UNSPECIFIED,
            vec![
                DhcpOption::RequestedIpAddress(IP),
                DhcpOption::ParameterRequestList(vec![OptionCode::SubnetMask]),
                DhcpOption::Hostname("vm-1".into()),
            ],
        );
        // Every truncation, and every single-byte corruption of the options area.
        for len in 0..good.len() {
            let _ = handle(&good[..len], SERVER, &ports());
        }
        for at in MIN_REQUEST_LEN..good.len() {
            for value in [0, 1, 2, 50, 53, 121, 127, 255] {
                let mut p = good.clone();
                p[at] = value;
                let _ = handle(&p, SERVER, &ports());
            }
        }
        // Pseudo-random bytes behind a valid header.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let mut p = good[..MIN_REQUEST_LEN].to_vec();
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let len = (state % 300) as usize;
            for i in 0..len {
                p.push((state >> (i % 56)) as u8 ^ i as u8);
            }
            let _ = handle(&p, SERVER, &ports());
        }
    }
}
