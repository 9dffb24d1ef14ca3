//! DHCP latency: a full DISCOVER → OFFER → REQUEST → ACK exchange against
//! [`hyperlet::dhcp::DhcpServer`], over a real veth between two network namespaces.
//!
//! `cargo bench -p hyperlet --bench dhcp` (as root) prints a Markdown table. `HYPERLET_BENCH_N`
//! sets the number of exchanges (default 200). The client is a plain UDP socket on 0.0.0.0:68
//! in the client namespace, bound to the veth with `SO_BINDTODEVICE`; requests are broadcast
//! like a real client's and the replies come back as broadcasts. The time is measured from
//! sending the DISCOVER to receiving the ACK, so it includes two round trips.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Message, MessageType};
use dhcproto::{Decodable, Decoder};
use hyperlet::dhcp::client::{open_socket, request};
use hyperlet::dhcp::{DhcpServer, HostRoute, Lease, LeaseSource};
use hyperlet::net::links::Netlink;
use hyperlet::net::netns;

const DEFAULT_N: usize = 200;
const WARMUP: usize = 5;
const SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
const SERVER_IF: &str = "hlb-srv";
const CLIENT_IF: &str = "hlb-cli";
/// The deadline of one reply.
const REPLY_TIMEOUT: Duration = Duration::from_secs(2);

/// Deletes the namespace it names on drop.
struct NsGuard(String);

impl NsGuard {
    fn create(role: &str) -> Self {
        let name = format!("hyperlet-bench-dhcp-{}-{role}", std::process::id());
        netns::create(&name)
            .unwrap_or_else(|e| panic!("creating namespace {name} (run as root): {e}"));
        Self(name)
    }
}

impl Drop for NsGuard {
    fn drop(&mut self) {
        let _ = netns::delete(&self.0);
    }
}

/// The one port of the benchmark.
struct OnePort(HashMap<[u8; 6], Lease>);

impl LeaseSource for OnePort {
    fn lease_for(&self, mac: [u8; 6]) -> Option<Lease> {
        self.0.get(&mac).cloned()
    }
}

/// Sends `datagram` to the broadcast address and waits for the reply with `xid`.
async fn round_trip(client: &tokio::net::UdpSocket, datagram: &[u8], xid: u32) -> Message {
    let to = SocketAddrV4::new(Ipv4Addr::BROADCAST, 67);
    client.send_to(datagram, to).await.expect("send");
    let mut buf = [0u8; 1500];
    let deadline = tokio::time::Instant::now() + REPLY_TIMEOUT;
    loop {
        let (len, _) = tokio::time::timeout_at(deadline, client.recv_from(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no reply to xid {xid:#x} within {REPLY_TIMEOUT:?}"))
            .expect("receive");
        let msg = Message::decode(&mut Decoder::new(&buf[..len])).expect("decode reply");
        if msg.xid() == xid {
            return msg;
        }
    }
}

/// One DISCOVER → ACK exchange; returns its duration.
async fn exchange(client: &tokio::net::UdpSocket, mac: [u8; 6], xid: u32) -> Duration {
    let start = Instant::now();
    let offer = round_trip(
        client,
        &request(
            MessageType::Discover,
            mac,
            xid,
            Ipv4Addr::UNSPECIFIED,
            vec![],
        ),
        xid,
    )
    .await;
    assert_eq!(offer.opts().msg_type(), Some(MessageType::Offer));
    let select = request(
        MessageType::Request,
        mac,
        xid,
        Ipv4Addr::UNSPECIFIED,
        vec![
            DhcpOption::ServerIdentifier(SERVER_IP),
            DhcpOption::RequestedIpAddress(offer.yiaddr()),
        ],
    );
    let ack = round_trip(client, &select, xid).await;
    let elapsed = start.elapsed();
    assert_eq!(ack.opts().msg_type(), Some(MessageType::Ack));
    assert_eq!(ack.yiaddr(), CLIENT_IP);
    elapsed
}

fn rank(sorted: &[Duration], q: f64) -> Duration {
    let n = sorted.len();
    sorted[((q * n as f64).ceil() as usize).clamp(1, n) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

async fn run(n: usize) {
    let (server_ns, client_ns) = (NsGuard::create("srv"), NsGuard::create("cli"));
    let srv = Netlink::in_namespace(&server_ns.0).await.expect("netlink");
    srv.create_veth(SERVER_IF, CLIENT_IF, Some(&client_ns.0))
        .await
        .expect("veth");
    srv.add_ipv4(SERVER_IF, SERVER_IP, 24)
        .await
        .expect("address");
    srv.set_up(SERVER_IF).await.expect("up");
    let cli = Netlink::in_namespace(&client_ns.0).await.expect("netlink");
    cli.add_ipv4(CLIENT_IF, CLIENT_IP, 24)
        .await
        .expect("address");
    cli.set_up(CLIENT_IF).await.expect("up");

    let mac = [0x02, 0x00, 0x5e, 0x00, 0x00, 0x10];
    let lease = Lease {
        mac,
        ip: CLIENT_IP,
        prefix_len: 24,
        gateway: Some(Ipv4Addr::new(198, 51, 100, 1)),
        dns: vec![SERVER_IP],
        mtu: Some(1450),
        hostname: Some("bench-vm".into()),
        domain_name: Some("openstacklocal".into()),
        host_routes: vec![HostRoute {
            destination: Ipv4Addr::new(169, 254, 169, 254),
            prefix_len: 32,
            nexthop: SERVER_IP,
        }],
        lease_time: Duration::from_secs(86_400),
    };
    let source = Arc::new(OnePort(HashMap::from([(mac, lease)])));
    let server = DhcpServer::start(&server_ns.0, SERVER_IF, SERVER_IP, source)
        .await
        .expect("start the DHCP server");

    let ns = client_ns.0.clone();
    let std_client =
        tokio::task::spawn_blocking(move || netns::run_in(&ns, || open_socket(CLIENT_IF, 68)))
            .await
            .expect("join")
            .expect("enter the client namespace")
            .expect("client socket");
    let client = tokio::net::UdpSocket::from_std(std_client).expect("tokio socket");

    // The veth may drop the very first frames while it comes up.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for i in 0..WARMUP {
        exchange(&client, mac, 0x1000 + i as u32).await;
    }
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        times.push(exchange(&client, mac, 0x10_0000 + i as u32).await);
    }
    times.sort();
    let stats = server.stats();
    server.stop().await;
    assert_eq!(stats.acks as usize, WARMUP + n, "{stats:?}");

    println!("DHCP DISCOVER → ACK over a veth between two namespaces, n = {n}:");
    println!();
    println!("| p50 | p99 | max |");
    println!("|---:|---:|---:|");
    println!(
        "| {} | {} | {} |",
        ms(rank(&times, 0.50)),
        ms(rank(&times, 0.99)),
        ms(times[n - 1])
    );
    println!();
    println!("Server counters: {stats:?}");
}

fn main() {
    let n = std::env::var("HYPERLET_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(DEFAULT_N);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(run(n));
}
