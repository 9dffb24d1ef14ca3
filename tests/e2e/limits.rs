//! Clients cannot hold the node's connections: the connection cap, the header-read timeout
//! (slowloris), the idle timeout, and their counters in `/metrics`; replaying subscribers do
//! not starve other requests. Raw TCP clients, a real agent.

use hyperlet_tests::Agent;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

const LIMITS: &str =
    "[api]\nmax_connections = 8\nheader_read_timeout_secs = 2\nidle_timeout_secs = 4\n";

fn connect(agent: &Agent) -> TcpStream {
    let stream = TcpStream::connect(&agent.addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    stream
}

/// Reads until the agent closes the connection; returns what it sent and when it closed.
fn read_until_closed(stream: &mut TcpStream) -> (Vec<u8>, Instant) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return (got, Instant::now()),
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return (got, Instant::now())
            }
            Err(e) => panic!("the agent kept the connection open: {e}"),
        }
    }
}

/// The value of an unlabelled or labelled metric line in `/metrics`.
fn metric(agent: &Agent, series: &str) -> u64 {
    let text = agent.get("/metrics").text().unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("{series} missing in:\n{text}"))
}

#[test]
fn a_client_sending_headers_byte_by_byte_is_closed_at_the_header_timeout() {
    let agent = Agent::start_with_config(LIMITS);
    let mut stream = connect(&agent);
    let started = Instant::now();
    let request =
        b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n";
    let mut closed_while_sending = false;
    for byte in request {
        if stream.write_all(&[*byte]).is_err() {
            closed_while_sending = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
        if started.elapsed() > Duration::from_secs(20) {
            break;
        }
    }
    let elapsed = if closed_while_sending {
        started.elapsed()
    } else {
        let (got, at) = read_until_closed(&mut stream);
        assert!(
            got.is_empty() || String::from_utf8_lossy(&got).starts_with("HTTP/1.1 408"),
            "{}",
            String::from_utf8_lossy(&got)
        );
        at - started
    };
    // Header timeout 2 s: closed well before the 16 s the trickle would take.
    assert!(
        elapsed >= Duration::from_millis(1500) && elapsed < Duration::from_secs(8),
        "closed after {elapsed:?}"
    );
    assert_eq!(
        metric(
            &agent,
            "hyperlet_http_connections_closed_total{reason=\"header_timeout\"}"
        ),
        1
    );
}

#[test]
fn an_http2_connection_without_requests_is_closed_at_the_idle_timeout() {
    let agent = Agent::start_with_config(LIMITS);
    let mut stream = connect(&agent);
    stream
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let started = Instant::now();
    // Prior-knowledge HTTP/2: the preface and an empty SETTINGS frame, then a PING every
    // 300 ms: bytes keep flowing, but no request is ever made.
    stream
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        .unwrap();
    let ping = b"\x00\x00\x08\x06\x00\x00\x00\x00\x00\x01\x02\x03\x04\x05\x06\x07\x08";
    let mut buf = [0u8; 4096];
    let closed_after = loop {
        if started.elapsed() > Duration::from_secs(20) {
            panic!("the idle HTTP/2 connection is still open after 20 s");
        }
        if stream.write_all(ping).is_err() {
            break started.elapsed();
        }
        match stream.read(&mut buf) {
            Ok(0) => break started.elapsed(),
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break started.elapsed(),
        }
    };
    assert!(
        closed_after >= Duration::from_millis(3500) && closed_after < Duration::from_secs(12),
        "closed after {closed_after:?}"
    );
    assert_eq!(
        metric(
            &agent,
            "hyperlet_http_connections_closed_total{reason=\"idle_timeout\"}"
        ),
        1
    );
}

#[test]
fn connections_over_the_cap_are_closed_and_counted() {
    let agent = Agent::start_with_config(LIMITS);
    let token = agent.token();
    // Eight event streams hold every slot (a request in flight is neither header- nor
    // idle-timed).
    let mut streams: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut s = connect(&agent);
            write!(
                s,
                "GET /v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
            )
            .unwrap();
            let mut head = [0u8; 12];
            s.read_exact(&mut head).unwrap();
            assert_eq!(&head, b"HTTP/1.1 200");
            s
        })
        .collect();
    // The ninth is accepted by the kernel and closed at once, without an answer.
    for _ in 0..3 {
        let mut extra = connect(&agent);
        let _ = extra.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n");
        let started = Instant::now();
        let (got, at) = read_until_closed(&mut extra);
        assert!(got.is_empty(), "{}", String::from_utf8_lossy(&got));
        assert!(at - started < Duration::from_secs(2), "{:?}", at - started);
    }
    // A slot frees when a client leaves; then the agent answers again.
    streams.pop();
    let deadline = Instant::now() + Duration::from_secs(10);
    let refused = loop {
        let answer = agent
            .client()
            .get(format!("{}/metrics", agent.url()))
            .bearer_auth(&token)
            .send();
        if let Ok(resp) = answer {
            let text = resp.text().unwrap();
            let value = |series: &str| -> u64 {
                text.lines()
                    .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
                    .unwrap_or_else(|| panic!("{series} missing in:\n{text}"))
            };
            assert!(value("hyperlet_http_connections_open") <= 8);
            break value("hyperlet_http_connections_refused_total");
        }
        assert!(Instant::now() < deadline, "no slot freed: {answer:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(refused >= 3, "refused {refused}");
}

#[test]
fn replaying_subscribers_do_not_starve_other_requests() {
    let agent = Agent::start();
    let token = agent.token();
    // A backlog to replay: 1,000 events.
    let client = agent.client();
    for i in 0..1000 {
        let resp = client
            .patch(format!("{}/v1/host", agent.url()))
            .bearer_auth(&token)
            .json(&serde_json::json!({"enabled": false, "disabled_reason": format!("r{i}")}))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    // 500 subscribers replay from 0, read by one thread that drains them all.
    let streams: Vec<TcpStream> = (0..500)
        .map(|_| {
            let mut s = TcpStream::connect(&agent.addr).unwrap();
            write!(
                s,
                "GET /v1/events?after=0 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
            )
            .unwrap();
            s.set_nonblocking(true).unwrap();
            s
        })
        .collect();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let drained = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut streams = streams;
            let mut total = 0usize;
            let mut buf = vec![0u8; 64 * 1024];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let mut idle = true;
                for s in &mut streams {
                    if let Ok(n) = s.read(&mut buf) {
                        total += n;
                        idle &= n == 0;
                    }
                }
                if idle {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            total
        })
    };
    let health = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(60))
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut worst = Duration::ZERO;
    let until = Instant::now() + Duration::from_secs(8);
    while Instant::now() < until {
        let started = Instant::now();
        let resp = health
            .get(format!("{}/healthz", agent.url()))
            .send()
            .unwrap();
        assert_eq!(resp.status(), 200);
        worst = worst.max(started.elapsed());
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let bytes = drained.join().unwrap();
    eprintln!("/healthz worst {worst:?} while 500 subscribers replayed ({bytes} bytes read)");
    assert!(bytes > 1_000_000, "the subscribers got only {bytes} bytes");
    // The target is well under a second (benches measure it); a loaded test machine gets slack.
    assert!(worst < Duration::from_secs(3), "/healthz took {worst:?}");
}
