//! Running wrk from the client namespace and reading its `--latency` report.

use std::time::Duration;

use super::procs::{in_ns, run_within};

/// One wrk run (or the summary of several).
#[derive(Debug, Clone, Copy)]
pub struct Measured {
    pub rps: f64,
    pub p50: Duration,
    pub p99: Duration,
    /// Requests answered.
    pub requests: u64,
    /// Answers other than 2xx/3xx plus socket errors.
    pub errors: u64,
}

/// How the load is shaped.
pub struct Load {
    /// wrk's `-d`, e.g. `10s`.
    pub duration: String,
    /// wrk's `-t`.
    pub threads: usize,
    /// wrk's `-c`.
    pub connections: usize,
}

/// A wrk time like `196.00us`, `1.31ms`, `2.00s`, `1.00m`.
pub fn parse_time(text: &str) -> Option<Duration> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let seconds = match unit {
        "us" => value / 1e6,
        "ms" => value / 1e3,
        "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return None,
    };
    Some(Duration::from_secs_f64(seconds))
}

/// Requests/sec, p50, p99, the request count and the errors from `wrk --latency` output:
///
/// ```text
///      50%  196.00us
///      99%    1.31ms
///   261234 requests in 10.00s, 38.20MB read
///   Socket errors: connect 0, read 2, write 0, timeout 0
///   Non-2xx or 3xx responses: 578
/// Requests/sec:  26123.40
/// ```
pub fn parse(output: &str) -> Result<Measured, String> {
    let mut rps = None;
    let (mut p50, mut p99, mut requests) = (None, None, None);
    let mut errors = 0u64;
    for line in output.lines() {
        let line = line.trim();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => rps = v.parse::<f64>().ok(),
            ["50%", v] => p50 = parse_time(v),
            ["99%", v] => p99 = parse_time(v),
            [n, "requests", "in", ..] => requests = n.parse::<u64>().ok(),
            _ if line.starts_with("Non-2xx or 3xx responses:")
                || line.starts_with("Socket errors:") =>
            {
                // Every number after the colon is a count of failures.
                let (_, counts) = line.split_once(':').unwrap_or_default();
                errors += counts
                    .split(|c: char| !c.is_ascii_digit())
                    .filter_map(|n| n.parse::<u64>().ok())
                    .sum::<u64>();
            }
            _ => {}
        }
    }
    Ok(Measured {
        rps: rps.ok_or("no Requests/sec line")?,
        p50: p50.ok_or("no 50% line (was --latency given?)")?,
        p99: p99.ok_or("no 99% line (was --latency given?)")?,
        requests: requests.ok_or("no \"N requests in\" line")?,
        errors,
    })
}

/// Runs wrk from namespace `ns` against `url` for `duration` (killed 30 s after it should
/// have ended).
pub fn run(ns: &str, url: &str, duration: &str, load: &Load) -> Measured {
    let seconds = parse_time(duration)
        .unwrap_or_else(|| panic!("bad wrk duration {duration:?}: use e.g. 10s"));
    let mut cmd = in_ns(ns, "wrk");
    cmd.args([
        &format!("-t{}", load.threads),
        &format!("-c{}", load.connections),
        &format!("-d{duration}"),
        "--timeout",
        "2s",
        "--latency",
        url,
    ]);
    let ran = run_within(cmd, seconds + Duration::from_secs(30));
    let text = String::from_utf8_lossy(&ran.stdout).into_owned();
    assert!(
        ran.status.success(),
        "wrk against {url} failed ({}): {}{text}",
        ran.status,
        ran.stderr
    );
    let measured = parse(&text).unwrap_or_else(|e| panic!("{e} against {url}:\n{text}"));
    if measured.errors > 0 {
        // Which kind of failure it was (status codes or socket errors), for the reader.
        for line in text
            .lines()
            .filter(|l| l.contains("errors:") || l.contains("Non-2xx"))
        {
            eprintln!("wrk against {url}: {}", line.trim());
        }
    }
    measured
}

/// The parser checks itself on a sample report at start (a bench has no test harness).
pub fn self_check() {
    let sample = "  Latency Distribution
     50%  196.00us
     99%    1.31ms
  700000 requests in 10.00s, 100.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 12
Requests/sec:  69999.50
";
    let m = parse(sample).expect("the sample parses");
    assert!((m.rps - 69_999.5).abs() < 1e-6, "{m:?}");
    assert_eq!(m.p50, Duration::from_micros(196), "{m:?}");
    assert_eq!(m.p99, Duration::from_micros(1310), "{m:?}");
    assert_eq!((m.requests, m.errors), (700_000, 15), "{m:?}");
}
