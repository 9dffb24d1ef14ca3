//! Security group benchmark (issue #12): rule programming at scale and the data path with the
//! firewall on vs off, each against a baseline measured in the same run.
//!
//! * Programming, on tables of the bench's own (`hlbench_l2`, `hlbench_sg`): 1,000 ports with
//!   port security, all in one group of 1,000 members and each in one of 49 more groups, 50
//!   groups × 20 rules. Timed: render + diff + `nft -f` for one rule added to the 1,000-member
//!   group, for one port joining it, and for the full replacement the agent does at start.
//!   Baselines: `nft -f` of a one-command script (the floor any change pays: a process and a
//!   netlink transaction), and the full replacement itself (what every change would cost
//!   without the diff).
//! * Data path: two namespaces on a bridge, their veths in the ruleset (both in a group that
//!   lets members in), TCP bulk throughput (256 MiB) and request/response latency (1-byte
//!   ping-pong) with the tables applied vs removed, alternating round by round.
//!
//! Run as root: `cargo bench -p hyperlet-tests --bench firewall` (`HYPERLET_BENCH_ROUNDS`,
//! default 10).

use hyperlet::net::firewall::{
    self, tables, Direction, FirewallPort, Indices, Protocol, Remote, Rule, Ruleset,
};
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

const PREFIX: &str = "hlbench";

fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn nft(script: &str) -> Duration {
    let path = std::env::temp_dir().join(format!("{PREFIX}-{}.nft", std::process::id()));
    std::fs::write(&path, script).unwrap();
    let start = Instant::now();
    sh(&["nft", "-f", path.to_str().unwrap()]);
    let took = start.elapsed();
    let _ = std::fs::remove_file(&path);
    took
}

fn group(k: usize) -> String {
    format!("00000000-0000-4000-8000-{k:012}")
}

fn rules_of(k: usize) -> Vec<Rule> {
    (0..20)
        .map(|r| Rule {
            direction: if r % 2 == 0 {
                Direction::Ingress
            } else {
                Direction::Egress
            },
            protocol: Protocol::Tcp(Some((1000 + r as u16, 1000 + r as u16))),
            remote: if r % 5 == 0 {
                Remote::Group(group((k + 1) % 50))
            } else {
                Remote::Prefix(format!("10.{}.{r}.0/24", k % 250).parse().unwrap())
            },
        })
        .collect()
}

fn port(i: usize) -> FirewallPort {
    FirewallPort {
        device: format!("hlb{i}"),
        mac: format!("fa:16:3e:00:{:02x}:{:02x}", i / 256, i % 256),
        ips: vec![Ipv4Addr::new(10, 200, (i / 250) as u8, (i % 250 + 1) as u8)],
        pairs: vec![],
        groups: vec![group(0), group(1 + i % 49)],
        secured: true,
    }
}

fn big_ruleset() -> Ruleset {
    Ruleset {
        bridges: vec!["hlbenchbr".into()],
        ports: (0..1000).map(port).collect(),
        rules: (0..50)
            .map(|k| (group(k), rules_of(k)))
            .collect::<BTreeMap<_, _>>(),
        trusted: vec![],
    }
}

/// The applier's step: render `ruleset`, diff against `applied` (or replace), run `nft -f`.
fn apply(
    ruleset: &Ruleset,
    indices: &mut Indices,
    applied: &mut Option<[tables::Table; 2]>,
) -> Duration {
    let start = Instant::now();
    indices.update(ruleset).unwrap();
    let new = firewall::render(ruleset, indices, PREFIX);
    let script = match applied {
        Some([l2, sg]) => tables::diff(l2, &new[0]).unwrap() + &tables::diff(sg, &new[1]).unwrap(),
        None => tables::full(&[&new[0], &new[1]]),
    };
    let path = std::env::temp_dir().join(format!("{PREFIX}-{}.nft", std::process::id()));
    std::fs::write(&path, &script).unwrap();
    sh(&["nft", "-f", path.to_str().unwrap()]);
    *applied = Some(new);
    start.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn remove_tables() {
    let path = std::env::temp_dir().join(format!("{PREFIX}-rm.nft"));
    std::fs::write(&path, firewall::remove_script(PREFIX)).unwrap();
    let _ = Command::new("nft").arg("-f").arg(&path).status();
}

fn programming(rounds: usize) {
    let base = big_ruleset();
    let (mut floor, mut full, mut rule_add, mut join, mut render_only) =
        (vec![], vec![], vec![], vec![], vec![]);
    for round in 0..rounds {
        floor.push(nft(&format!("add table bridge {PREFIX}_floor\n")));
        let mut indices = Indices::default();
        let mut applied = None;
        full.push(apply(&base, &mut indices, &mut applied));
        let mut more = base.clone();
        more.rules.get_mut(&group(0)).unwrap().push(Rule {
            direction: Direction::Ingress,
            protocol: Protocol::Udp(Some((5000 + round as u16, 5000 + round as u16))),
            remote: Remote::Any,
        });
        rule_add.push(apply(&more, &mut indices, &mut applied));
        more.ports.push(port(1000 + round));
        join.push(apply(&more, &mut indices, &mut applied));
        // Diagnostic: the same rule change without `nft` (render + diff only).
        let start = Instant::now();
        let mut again = more.clone();
        again.rules.get_mut(&group(1)).unwrap().pop();
        indices.update(&again).unwrap();
        let new = firewall::render(&again, &indices, PREFIX);
        if let Some([l2, sg]) = &applied {
            let _ = tables::diff(l2, &new[0]).unwrap() + &tables::diff(sg, &new[1]).unwrap();
        }
        render_only.push(start.elapsed());
    }
    let _ = Command::new("nft")
        .args(["delete", "table", "bridge", &format!("{PREFIX}_floor")])
        .status();
    remove_tables();
    println!("| 1,000 ports, 50 groups × 20 rules (median of {rounds}) | time |");
    println!("|---|---|");
    println!(
        "| baseline: `nft -f` of one command | {} |",
        ms(median(floor))
    );
    println!(
        "| baseline: full replacement (the agent at start) | {} |",
        ms(median(full))
    );
    println!(
        "| one rule added to the 1,000-member group | {} |",
        ms(median(rule_add))
    );
    println!(
        "| one port joins the 1,000-member group | {} |",
        ms(median(join))
    );
    println!(
        "| diagnostic: render + diff of one rule change, no `nft` | {} |",
        ms(median(render_only))
    );
}

/// Two namespaces `a`, `b` on a bridge with veths `hlbfa`/`hlbfb`; removed on drop.
struct Fabric;

impl Fabric {
    fn new() -> Self {
        Self::cleanup();
        sh(&["ip", "link", "add", "hlbenchbr", "type", "bridge"]);
        sh(&["ip", "link", "set", "hlbenchbr", "up"]);
        for (n, ip) in [("a", "10.201.0.1"), ("b", "10.201.0.2")] {
            let ns = format!("hlbench-{n}");
            let tap = format!("hlbf{n}");
            sh(&["ip", "netns", "add", &ns]);
            sh(&[
                "ip", "link", "add", &tap, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ]);
            sh(&["ip", "link", "set", &tap, "master", "hlbenchbr", "up"]);
            sh(&["ip", "-n", &ns, "link", "set", "lo", "up"]);
            sh(&["ip", "-n", &ns, "link", "set", "eth0", "up"]);
            sh(&[
                "ip",
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                "eth0",
            ]);
        }
        Fabric
    }

    fn cleanup() {
        for ns in ["hlbench-a", "hlbench-b"] {
            let _ = Command::new("ip").args(["netns", "delete", ns]).output();
        }
        let _ = Command::new("ip")
            .args(["link", "delete", "hlbenchbr"])
            .output();
    }

    fn mac(n: &str) -> String {
        sh(&[
            "ip",
            "-n",
            &format!("hlbench-{n}"),
            "-br",
            "link",
            "show",
            "eth0",
        ])
        .split_whitespace()
        .nth(2)
        .unwrap()
        .to_string()
    }
}

impl Drop for Fabric {
    fn drop(&mut self) {
        Self::cleanup();
        remove_tables();
    }
}

/// A listener in namespace `b` and a connected client in `a`.
fn connect() -> (TcpStream, TcpStream) {
    let listener = hyperlet::net::netns::run_in("hlbench-b", || {
        TcpListener::bind("10.201.0.2:5201").unwrap()
    })
    .unwrap();
    let client = hyperlet::net::netns::run_in("hlbench-a", || {
        TcpStream::connect("10.201.0.2:5201").unwrap()
    })
    .unwrap();
    let (server, _) = listener.accept().unwrap();
    client.set_nodelay(true).unwrap();
    server.set_nodelay(true).unwrap();
    (client, server)
}

/// (MiB/s for 256 MiB, mean round trip of 2,000 1-byte exchanges).
fn measure() -> (f64, Duration) {
    let (mut client, mut server) = connect();
    let total = 256usize << 20;
    let sink = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut got = 0;
        while got < total {
            got += server.read(&mut buf).unwrap();
        }
        server.write_all(&[1]).unwrap();
        let mut one = [0u8; 1];
        for _ in 0..2000 {
            server.read_exact(&mut one).unwrap();
            server.write_all(&one).unwrap();
        }
    });
    let chunk = vec![7u8; 1 << 16];
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        client.write_all(&chunk).unwrap();
        sent += chunk.len();
    }
    let mut one = [0u8; 1];
    client.read_exact(&mut one).unwrap();
    let throughput = (total >> 20) as f64 / start.elapsed().as_secs_f64();
    let start = Instant::now();
    for _ in 0..2000 {
        client.write_all(&one).unwrap();
        client.read_exact(&mut one).unwrap();
    }
    let rtt = start.elapsed() / 2000;
    sink.join().unwrap();
    (throughput, rtt)
}

fn data_path(rounds: usize) {
    let _fabric = Fabric::new();
    let g = group(0);
    let ruleset = Ruleset {
        bridges: vec!["hlbenchbr".into()],
        ports: [("a", "10.201.0.1"), ("b", "10.201.0.2")]
            .iter()
            .map(|(n, ip)| FirewallPort {
                device: format!("hlbf{n}"),
                mac: Fabric::mac(n),
                ips: vec![ip.parse().unwrap()],
                pairs: vec![],
                groups: vec![g.clone()],
                secured: true,
            })
            .collect(),
        rules: [(
            g.clone(),
            vec![
                Rule {
                    direction: Direction::Egress,
                    protocol: Protocol::Any,
                    remote: Remote::Any,
                },
                Rule {
                    direction: Direction::Ingress,
                    protocol: Protocol::Any,
                    remote: Remote::Group(g.clone()),
                },
            ],
        )]
        .into_iter()
        .collect(),
        trusted: vec![],
    };
    let script = firewall::script(&ruleset, PREFIX).unwrap();
    let (mut off, mut on) = (vec![], vec![]);
    for round in 0..rounds {
        // Alternate which goes first, so neither always meets a cold connection.
        if round % 2 == 0 {
            remove_tables();
            off.push(measure());
            nft(&script);
            on.push(measure());
        } else {
            nft(&script);
            on.push(measure());
            remove_tables();
            off.push(measure());
        }
    }
    let mid = |v: &[(f64, Duration)]| {
        let mut t: Vec<f64> = v.iter().map(|x| x.0).collect();
        t.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let l = median(v.iter().map(|x| x.1).collect());
        (t[t.len() / 2], l)
    };
    let ((t_off, l_off), (t_on, l_on)) = (mid(&off), mid(&on));
    println!();
    println!(
        "| data path, 2 namespaces on a bridge (median of {rounds}) | TCP MiB/s | round trip |"
    );
    println!("|---|---|---|");
    println!(
        "| baseline: firewall off | {t_off:.0} | {:.1} µs |",
        l_off.as_secs_f64() * 1e6
    );
    println!(
        "| firewall on (anti-spoofing, conntrack zone, group rules) | {t_on:.0} ({:.2}×) | {:.1} µs |",
        t_on / t_off,
        l_on.as_secs_f64() * 1e6
    );
}

fn main() {
    assert!(
        nix::unistd::Uid::effective().is_root(),
        "run as root: nftables and namespaces need CAP_NET_ADMIN"
    );
    let rounds: usize = std::env::var("HYPERLET_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(10);
    programming(rounds);
    data_path(rounds);
}
