//! `GET /v1/events`: live delivery, resumption with Last-Event-ID, persistence over restarts.

use hyperlet_tests::{Agent, SseReader};
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use std::time::Duration;

fn open_stream(agent: &Agent, last_event_id: Option<u64>, query: &str) -> SseReader {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut req = client
        .get(format!("{}/v1/events{query}", agent.url()))
        .bearer_auth(agent.token());
    if let Some(id) = last_event_id {
        req = req.header("Last-Event-ID", id.to_string());
    }
    let resp = req.send().unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    SseReader::new(resp)
}

fn disable(agent: &Agent, reason: &str) {
    let resp = agent
        .client()
        .patch(format!("{}/v1/host", agent.url()))
        .bearer_auth(agent.token())
        .json(&json!({"enabled": false, "disabled_reason": reason}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
}

fn seq(msg: &hyperlet_tests::SseMessage) -> u64 {
    let data: Value = serde_json::from_str(&msg.data).unwrap();
    let seq = data["seq"].as_u64().unwrap();
    assert_eq!(msg.id.as_deref(), Some(seq.to_string().as_str()));
    seq
}

#[test]
fn live_events_then_resume_after_last_event_id() {
    let mut agent = Agent::start();
    // From the beginning of the backlog: the start of this agent is recorded.
    let mut replay = open_stream(&agent, None, "?after=0");
    let started = replay.until_event("agent.started", 10);
    let started_seq = seq(&started);

    let mut live = open_stream(&agent, None, "");
    disable(&agent, "one");
    disable(&agent, "two");
    let one = live.until_event("host.updated", 10);
    let two = live.until_event("host.updated", 10);
    let (one_seq, two_seq) = (seq(&one), seq(&two));
    assert!(started_seq < one_seq && one_seq < two_seq);
    let data: Value = serde_json::from_str(&one.data).unwrap();
    assert_eq!(data["data"]["service_status"]["disabled_reason"], "one");

    // Resume after the first: exactly the second comes next, no duplicate.
    let mut resumed = open_stream(&agent, Some(one_seq), "");
    let next = resumed.next_message().unwrap();
    assert_eq!(seq(&next), two_seq);

    // A bad Last-Event-ID is a 400.
    let resp = agent
        .client()
        .get(format!("{}/v1/events", agent.url()))
        .bearer_auth(agent.token())
        .header("Last-Event-ID", "yesterday")
        .send()
        .unwrap();
    assert_eq!(resp.status(), 400);

    // Events survive a restart and numbering continues.
    agent.signal(Signal::SIGTERM);
    assert!(agent
        .wait_exit(Duration::from_secs(10))
        .expect("exits")
        .success());
    agent.restart();
    let mut after_restart = open_stream(&agent, Some(two_seq), "");
    let stopped = after_restart.until_event("agent.stopped", 5);
    assert!(seq(&stopped) > two_seq);
    let restarted = after_restart.until_event("agent.started", 5);
    assert!(seq(&restarted) > seq(&stopped));
}

#[test]
fn pruned_backlog_reports_a_gap() {
    let mut agent = Agent::start();
    // A tiny backlog via the config file.
    agent.signal(Signal::SIGTERM);
    agent.wait_exit(Duration::from_secs(10)).expect("exits");
    let config = agent.dir.path().join("hyperlet.toml");
    std::fs::write(&config, "[events]\nbacklog = 5\n").unwrap();
    agent.args = vec!["--config".into(), config.display().to_string()];
    agent.restart();
    for i in 0..70 {
        disable(&agent, &format!("r{i}"));
    }
    let mut stream = open_stream(&agent, Some(1), "");
    let gap = stream.next_message().unwrap();
    assert_eq!(gap.event.as_deref(), Some("gap"));
    let gap: Value = serde_json::from_str(&gap.data).unwrap();
    assert_eq!(gap["from"], 2);
    let first_kept = stream.next_message().unwrap();
    assert_eq!(seq(&first_kept), gap["to"].as_u64().unwrap() + 1);
}

#[test]
fn resume_points_beyond_a_sequence_number_are_refused_on_a_live_connection() {
    use std::io::{BufRead, BufReader, Read, Write};
    let agent = Agent::start();
    let token = agent.token();
    let stream = std::net::TcpStream::connect(&agent.addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    // One keep-alive connection: each bad value gets a JSON 400 and the connection stays up.
    let cases = [
        ("?after=18446744073709551615", None),
        ("?after=9223372036854775808", None),
        ("?after=18446744073709551616", None),
        ("", Some("18446744073709551615")),
        ("", Some("9223372036854775808")),
        ("", Some("-1")),
    ];
    for (query, header) in cases {
        let extra = header.map_or(String::new(), |h| format!("Last-Event-ID: {h}\r\n"));
        write!(
            writer,
            "GET /v1/events{query} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n{extra}\r\n"
        )
        .unwrap();
        let mut status = String::new();
        reader.read_line(&mut status).unwrap();
        assert!(
            status.starts_with("HTTP/1.1 400"),
            "{query} {header:?}: {status:?}"
        );
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0u8; length];
        reader.read_exact(&mut body).unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["error"]["code"], "invalid_request", "{body}");
        let message = body["error"]["message"].as_str().unwrap();
        let named = if header.is_some() {
            "Last-Event-ID"
        } else {
            "after"
        };
        assert!(message.contains(named), "{body}");
    }
    // The largest sequence number is a valid resume point (nothing after it yet).
    write!(
        writer,
        "GET /v1/events?after=9223372036854775807 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
    )
    .unwrap();
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status:?}");
}
