//! The Markdown tables.

use std::collections::BTreeMap;
use std::time::Duration;

use super::wrk::{Load, Measured};
use super::{Server, PATHS, TARGET_P99, TARGET_RATIO, WORKERS};

/// Per (path index, server): the runs of every round.
pub type Results = BTreeMap<(usize, Server), Vec<Measured>>;

fn ms(d: Duration) -> String {
    format!("{:.3} ms", d.as_secs_f64() * 1e3)
}

/// One line of progress on stderr.
pub fn progress(round: usize, path: &str, server: Server, load: &Load, m: &Measured) {
    eprintln!(
        "round {round} {path} {} (-c{}): {:.0} req/s, p50 {}, p99 {}, {} errors of {}",
        server.label(),
        load.connections,
        m.rps,
        ms(m.p50),
        ms(m.p99),
        m.errors,
        m.requests
    );
}

/// Requests/s counting successful answers only (a failed request is often a fast one).
fn ok_rps(m: &Measured) -> f64 {
    m.rps * m.requests.saturating_sub(m.errors) as f64 / m.requests.max(1) as f64
}

/// Mean successful requests/s, mean p50, worst p99, total requests and errors over the rounds.
fn summarize(runs: &[Measured]) -> Measured {
    let n = runs.len() as f64;
    Measured {
        rps: runs.iter().map(ok_rps).sum::<f64>() / n,
        p50: Duration::from_secs_f64(runs.iter().map(|m| m.p50.as_secs_f64()).sum::<f64>() / n),
        p99: runs.iter().map(|m| m.p99).max().unwrap_or_default(),
        requests: runs.iter().map(|m| m.requests).sum(),
        errors: runs.iter().map(|m| m.errors).sum(),
    }
}

/// `errors`, with their share of the requests when there are any.
fn error_cell(m: Measured) -> String {
    if m.errors == 0 {
        "0".to_owned()
    } else {
        let share = m.errors as f64 * 100.0 / m.requests.max(1) as f64;
        format!("**{} ({share:.2} %)**", m.errors)
    }
}

fn row(path: &str, server: &str, m: Measured) {
    println!(
        "| `{path}` | {server} | {:.0} | {} | {} | {} |",
        m.rps,
        ms(m.p50),
        ms(m.p99),
        error_cell(m)
    );
}

/// The throughput table (hyperlet vs nginx under `saturation`, with ratios), the latency
/// table (one guest: `one_guest`), the verdict on the targets, and — when diagnostic servers
/// ran — a third table.
pub fn print(
    throughput: &Results,
    latency: &Results,
    saturation: &Load,
    one_guest: &Load,
    rounds: usize,
    nginx_version: &str,
) {
    println!(
        "Throughput: wrk -t{} -c{} -d{} --latency ({rounds} rounds per server and path, \
         alternating) from a guest namespace over a veth; hyperlet on a {WORKERS}-worker tokio \
         runtime, {nginx_version} with {WORKERS} worker processes serving the same bodies:",
        saturation.threads, saturation.connections, saturation.duration
    );
    println!();
    println!(
        "| path | server | successful requests/s (mean) | p50 (mean) | p99 (worst round) | failed requests |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    let mut notes = Vec::new();
    for (i, path) in PATHS.iter().enumerate() {
        let a = summarize(&throughput[&(i, Server::Agent)]);
        let b = summarize(&throughput[&(i, Server::Nginx)]);
        row(path, Server::Agent.label(), a);
        row(path, Server::Nginx.label(), b);
        let ratio = a.rps / b.rps;
        println!(
            "| | **hyperlet / nginx** | **{ratio:.2}×** | {:.2}× | {:.2}× | |",
            a.p50.as_secs_f64() / b.p50.as_secs_f64(),
            a.p99.as_secs_f64() / b.p99.as_secs_f64()
        );
        if ratio < TARGET_RATIO {
            notes.push(format!("`{path}` {ratio:.2}× nginx's requests/s"));
        }
        if a.errors > 0 {
            notes.push(format!("`{path}` {} failed requests", a.errors));
        }
    }
    println!();
    println!(
        "Latency of one guest: wrk -t{} -c{} -d{} --latency (one connection, one request at a \
         time, as cloud-init asks), same rounds and order:",
        one_guest.threads, one_guest.connections, one_guest.duration
    );
    println!();
    println!(
        "| path | server | p50 (mean) | p99 (worst round) | requests/s (mean) | failed requests |"
    );
    println!("|---|---|---:|---:|---:|---:|");
    for (i, path) in PATHS.iter().enumerate() {
        for server in [Server::Agent, Server::Nginx] {
            let m = summarize(&latency[&(i, server)]);
            println!(
                "| `{path}` | {} | {} | {} | {:.0} | {} |",
                server.label(),
                ms(m.p50),
                ms(m.p99),
                m.rps,
                error_cell(m)
            );
            if server == Server::Agent {
                if m.p99 > TARGET_P99 {
                    notes.push(format!("`{path}` p99 {} for one guest", ms(m.p99)));
                }
                if m.errors > 0 {
                    notes.push(format!(
                        "`{path}` {} failed requests for one guest",
                        m.errors
                    ));
                }
            }
        }
    }
    println!();
    println!(
        "Targets (hyperlet ≥ {TARGET_RATIO}× nginx's successful requests/s under load, p99 ≤ {} \
         for one guest, no failed requests, on every path): {}",
        ms(TARGET_P99),
        if notes.is_empty() {
            "met".to_owned()
        } else {
            format!("NOT met: {}", notes.join("; "))
        }
    );

    let diagnostic: Vec<_> = Server::DIAGNOSTIC
        .iter()
        .filter(|s| throughput.keys().any(|(_, k)| k == *s))
        .collect();
    if diagnostic.is_empty() {
        return;
    }
    println!();
    println!(
        "Where the time goes (throughput load, same run; successful requests/s relative to nginx):"
    );
    println!();
    println!(
        "| path | server | successful requests/s (mean) | p50 (mean) | p99 (worst round) | failed requests | vs nginx |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for (i, path) in PATHS.iter().enumerate() {
        let b = summarize(&throughput[&(i, Server::Nginx)]);
        for server in [Server::Agent]
            .iter()
            .chain(diagnostic.iter().copied())
            .chain([Server::Nginx].iter())
        {
            let Some(runs) = throughput.get(&(i, *server)) else {
                continue;
            };
            let m = summarize(runs);
            println!(
                "| `{path}` | {} | {:.0} | {} | {} | {} | {:.2}× |",
                server.label(),
                m.rps,
                ms(m.p50),
                ms(m.p99),
                error_cell(m),
                m.rps / b.rps
            );
        }
    }
}
