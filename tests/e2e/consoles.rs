//! Consoles over WebSocket on real guests (libvirtd + QEMU TCG, the test guest with a shell
//! on its serial console): one-time URLs, both directions, take-over and read-only, the
//! server binding, VNC and screenshots, and how sessions end.

use crate::servers::{create, flavor, import_guest, CONFIG};
use hyperlet_tests::console::{ConsoleSocket, PtyProcess};
use hyperlet_tests::{hyperlet_bin, Agent};
use nix::sys::termios::LocalFlags;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const BOOT_LIMIT: Duration = Duration::from_secs(120);
const ANSWER: Duration = Duration::from_secs(20);

/// The agent's settings for console tests: [`CONFIG`] and short console limits.
fn config(consoles: &str) -> String {
    format!("{CONFIG}[consoles]\n{consoles}\n")
}

/// `POST /v1/servers/{id}/remote-consoles` with `body`: the status and the answer.
pub fn remote_console(agent: &Agent, id: &str, body: Value) -> (u16, Value) {
    let resp = agent.send(
        Method::POST,
        &format!("/v1/servers/{id}/remote-consoles"),
        Some(&body),
    );
    let status = resp.status().as_u16();
    (status, resp.json().unwrap_or(Value::Null))
}

/// A URL for a serial console session (asserts 200).
pub fn serial_url(agent: &Agent, id: &str, body: Value) -> String {
    let (status, answer) = remote_console(agent, id, body);
    assert_eq!(status, 200, "{answer}");
    answer["url"].as_str().expect("url").to_string()
}

/// Boots a server from `image` with a shell on its console; waits for the shell.
pub fn boot_shell_server(agent: &Agent, name: &str, image: &str) -> String {
    let id = create(agent, name, image, flavor(1, 128));
    agent.wait_server(&id, "ACTIVE", BOOT_LIMIT);
    agent.wait_console(&id, "HYPERLET-GUEST: ready", 1, BOOT_LIMIT);
    id
}

/// Runs `command` in the guest's shell through `socket` and waits for `answer`.
fn run(socket: &mut ConsoleSocket, command: &str, answer: &str) -> String {
    run_within(socket, command, answer, ANSWER)
}

/// [`run`] for a command that takes up to `limit` (the guest is slower while other tests run).
fn run_within(socket: &mut ConsoleSocket, command: &str, answer: &str, limit: Duration) -> String {
    socket.send(format!("{command}\r").as_bytes());
    socket.read_until(answer, limit)
}

/// How long the guest may take to print the flood on a busy machine (alone: about 10 s).
const FLOOD_LIMIT: Duration = Duration::from_secs(240);

#[test]
fn serial_console_both_ways_with_take_over_watchers_and_one_time_urls() {
    let _vm = hyperlet_tests::vm_shared();
    let agent = Agent::start_with_config(&config("token_ttl_secs = 5"));
    let image = import_guest(&agent, "hyperlet.shell=1 hyperlet.dhcp=0");
    let a = create(&agent, "console-a", &image, flavor(1, 128));
    let b = boot_shell_server(&agent, "console-b", &image);
    agent.wait_server(&a, "ACTIVE", BOOT_LIMIT);
    agent.wait_console(&a, "HYPERLET-GUEST: ready", 1, BOOT_LIMIT);

    // Bad requests change nothing.
    for bad in [
        json!({"type": "spice"}),
        json!({}),
        json!({"type": "serial", "read_only": true, "force": true}),
        json!({"type": "novnc", "read_only": true}),
        json!({"type": "serial", "extra": 1}),
    ] {
        let (status, answer) = remote_console(&agent, &a, bad.clone());
        assert_eq!(status, 400, "{bad}: {answer}");
    }
    let (status, _) = remote_console(&agent, "no-such-server", json!({"type": "serial"}));
    assert_eq!(status, 404);
    // Without the admin token: 401.
    let resp = agent
        .client()
        .post(format!("{}/v1/servers/{a}/remote-consoles", agent.url()))
        .json(&json!({"type": "serial"}))
        .send()
        .unwrap();
    assert_eq!(resp.status(), 401);

    let (status, answer) = remote_console(&agent, &a, json!({"type": "serial"}));
    assert_eq!(status, 200, "{answer}");
    let url = answer["url"].as_str().unwrap().to_string();
    assert!(
        url.starts_with(&format!("ws://{}/v1/consoles/", agent.addr)),
        "{url}"
    );
    assert_eq!(answer["type"], "serial");
    assert_eq!(answer["read_only"], false);
    assert!(
        answer["expires_at"].as_str().unwrap().ends_with('Z'),
        "{answer}"
    );
    // A plain GET is told to use a WebSocket and leaves the URL usable.
    let plain = agent
        .client()
        .get(url.replacen("ws://", "http://", 1))
        .send()
        .unwrap();
    assert_eq!(plain.status(), 400);
    assert_eq!(
        plain.json::<Value>().unwrap()["error"]["code"],
        "websocket_required"
    );
    // The token is never logged.
    let token = url.rsplit('/').next().unwrap().to_string();
    assert!(
        !agent.log().contains(&token),
        "the agent logged a console token"
    );

    // Both directions: a command typed over the WebSocket runs in the guest's shell and its
    // answer comes back; the guest is server A (its SMBIOS serial is the server id).
    let mut writer = ConsoleSocket::open(&url).expect("open the console");
    let out = run(&mut writer, "echo answer-$((6*7))", "answer-42");
    assert!(
        out.contains("echo answer-$((6*7))"),
        "the echo of the typed line: {out}"
    );
    run(&mut writer, "cat /sys/class/dmi/id/product_serial", &a);

    // One-time: used → 410; never issued → 401.
    let again = ConsoleSocket::open(&url)
        .err()
        .expect("a used URL must not open");
    assert_eq!(again.status, 410, "{}", again.body);
    let forged = format!("ws://{}/v1/consoles/{}", agent.addr, "A".repeat(43));
    assert_eq!(ConsoleSocket::open(&forged).err().unwrap().status, 401);
    let junk = format!("ws://{}/v1/consoles/x", agent.addr);
    assert_eq!(ConsoleSocket::open(&junk).err().unwrap().status, 401);
    // Expired: not opened within token_ttl_secs (5 s here).
    let late = serial_url(&agent, &a, json!({"type": "serial", "read_only": true}));
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(ConsoleSocket::open(&late).err().unwrap().status, 410);

    // A second interactive session is refused while the first types…
    let (status, answer) = remote_console(&agent, &a, json!({"type": "serial"}));
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "console_in_use");
    // …but watchers may join: they see what the writer's commands print, and what they type
    // reaches nobody.
    let watch_url = serial_url(&agent, &a, json!({"type": "serial", "read_only": true}));
    let mut watcher = ConsoleSocket::open(&watch_url).expect("watcher");
    run(&mut writer, "echo watched-$((40+2))", "watched-42");
    watcher.read_until("watched-42", ANSWER);
    watcher.send(b"echo ignored-$((1+1))\r");
    run(&mut writer, "echo after-$((1+2))", "after-3");
    assert!(
        !writer.seen.contains("ignored-2") && !writer.seen.contains("echo ignored"),
        "a read-only session's input reached the guest:\n{}",
        writer.seen
    );

    // Take-over: the old writer is told why it was closed; the new one types.
    let force_url = serial_url(&agent, &a, json!({"type": "serial", "force": true}));
    let mut second = ConsoleSocket::open(&force_url).expect("take over");
    let (code, reason) = writer.wait_closed(ANSWER);
    assert_eq!(code, 4001, "{reason}");
    assert!(reason.contains("took over"), "{reason}");
    run(&mut second, "echo second-$((3*3))", "second-9");
    watcher.read_until("second-9", ANSWER);
    // Text messages (what browser terminals send) are typed too.
    second.send_text("echo text-$((2*5))\r");
    second.read_until("text-10", ANSWER);

    // The CLI: `server console --attach` in a real terminal, raw while attached, restored
    // after Ctrl-] and after SIGTERM; --force takes over, --read-only watches.
    let agent_url = agent.url();
    let token = agent.token();
    let cli = |extra: &[&str]| {
        let mut args = vec!["server", "console", "--attach", a.as_str()];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--url", &agent_url]);
        PtyProcess::spawn(&hyperlet_bin(), &args, &[("HYPERLET_TOKEN", &token)])
    };
    let mut attached = cli(&["--force"]);
    let cooked = attached.termios();
    attached.read_until("Escape character is ^]", ANSWER);
    let (code, _) = second.wait_closed(ANSWER);
    assert_eq!(code, 4001);
    let raw = attached.termios();
    assert!(
        !raw.local_flags.contains(LocalFlags::ECHO)
            && !raw.local_flags.contains(LocalFlags::ICANON),
        "the CLI did not put the terminal in raw mode"
    );
    attached.type_bytes(b"echo cli-$((4*4))\r");
    attached.read_until("cli-16", ANSWER);
    watcher.read_until("cli-16", ANSWER);
    attached.type_bytes(&[0x1d]);
    let status = attached.wait(ANSWER);
    assert!(
        status.success(),
        "Ctrl-] must leave cleanly: {}",
        attached.seen
    );
    assert_eq!(
        attached.termios().local_flags,
        cooked.local_flags,
        "terminal not restored"
    );
    let mut killed = cli(&[]);
    killed.read_until("Escape character is ^]", ANSWER);
    assert!(!killed.termios().local_flags.contains(LocalFlags::ECHO));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(killed.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    killed.wait(ANSWER);
    assert_eq!(
        killed.termios().local_flags,
        cooked.local_flags,
        "terminal not restored"
    );
    let mut watching = cli(&["--read-only"]);
    watching.read_until("(read-only)", ANSWER);
    // A session is refused with the agent's reason when another one types.
    let mut second = ConsoleSocket::open(&serial_url(&agent, &a, json!({"type": "serial"})))
        .expect("a writer again");
    let mut refused = cli(&[]);
    let status = refused.wait(ANSWER);
    assert!(!status.success());
    assert!(refused.seen.contains("409"), "{}", refused.seen);
    run(
        &mut second,
        "echo watched-by-cli-$((9*9))",
        "watched-by-cli-81",
    );
    watching.read_until("watched-by-cli-81", ANSWER);
    watching.type_bytes(&[0x1d]);
    assert!(watching.wait(ANSWER).success());

    // `virsh console` holds B's console: a session is refused (409 console_in_use, recognised
    // by libvirt's error code), one with force takes the console from virsh.
    let domain = agent.get_json(&format!("/v1/servers/{b}"))["domain_name"]
        .as_str()
        .unwrap()
        .to_string();
    let mut virsh = PtyProcess::spawn(
        std::path::Path::new("virsh"),
        &["-c", "qemu:///system", "console", &domain],
        &[],
    );
    virsh.read_until("Escape character", ANSWER);
    let Err(refused) = ConsoleSocket::open(&serial_url(&agent, &b, json!({"type": "serial"})))
    else {
        panic!("a session opened while virsh has the console");
    };
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert!(refused.body.contains("console_in_use"), "{}", refused.body);
    let mut taken = ConsoleSocket::open(&serial_url(
        &agent,
        &b,
        json!({"type": "serial", "force": true}),
    ))
    .expect("force takes the console from virsh");
    run(&mut taken, "echo taken-$((5*5))", "taken-25");
    // virsh loses its stream and exits.
    virsh.wait(ANSWER);
    taken.close();

    // A URL opens only its own server: B's session shows B.
    let mut on_b = ConsoleSocket::open(&serial_url(&agent, &b, json!({"type": "serial"})))
        .expect("console of B");
    run(&mut on_b, "cat /sys/class/dmi/id/product_serial", &b);
    assert!(!on_b.seen.contains(&a), "B's console showed A's id");
    // A URL issued for a server that is deleted before it is opened no longer opens.
    let stale = serial_url(&agent, &b, json!({"type": "serial", "read_only": true}));

    // Deleting B ends its session (4006) and spends its URLs.
    assert_eq!(
        agent
            .send(Method::DELETE, &format!("/v1/servers/{b}"), None)
            .status(),
        202
    );
    let (code, reason) = on_b.wait_closed(ANSWER);
    assert_eq!(code, 4006, "{reason}");
    assert_eq!(ConsoleSocket::open(&stale).err().unwrap().status, 410);

    // Stopping A ends its sessions (4002): the console stream ended with the guest.
    let resp = agent.send(
        Method::POST,
        &format!("/v1/servers/{a}/action"),
        Some(&json!({"stop": null})),
    );
    assert_eq!(resp.status(), 202);
    for socket in [&mut second, &mut watcher] {
        let (code, reason) = socket.wait_closed(BOOT_LIMIT);
        assert_eq!(code, 4002, "{reason}");
    }
    agent.wait_server(&a, "SHUTOFF", BOOT_LIMIT);
    let (status, answer) = remote_console(&agent, &a, json!({"type": "serial"}));
    assert_eq!(status, 409, "{answer}");
    assert_eq!(answer["error"]["code"], "server_not_running");
}

/// The agent's resident memory, KiB.
fn rss_kib(agent: &Agent) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", agent.pid())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

/// A value of the agent's `/metrics`.
fn metric(agent: &Agent, line_start: &str) -> u64 {
    let text = agent.get("/metrics").text().unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(line_start))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in /metrics"))
}

/// Growth of the agent's RSS allowed for 100 idle sessions (README "Consoles").
const RSS_BOUND_100_SESSIONS_KIB: u64 = 4 * 1024;

#[test]
fn console_limits_idle_slow_clients_vnc_screenshots_and_shutdown() {
    let _vm = hyperlet_tests::vm_shared();
    let mut agent = Agent::start_with_config(&config("idle_timeout_secs = 10\nmax_sessions = 102"));
    let image = import_guest(&agent, "hyperlet.shell=1 hyperlet.dhcp=0");
    let id = boot_shell_server(&agent, "limits", &image);

    // VNC: the URL reaches QEMU's display (its RFB greeting comes through the proxy).
    let (status, answer) = remote_console(&agent, &id, json!({"type": "novnc"}));
    assert_eq!(status, 200, "{answer}");
    let mut vnc = ConsoleSocket::open(answer["url"].as_str().unwrap()).expect("VNC session");
    let greeting = vnc.first_binary(ANSWER);
    assert!(greeting.starts_with(b"RFB 003.008"), "{greeting:?}");
    vnc.close();
    // The screen as PNG.
    let shot = agent.get(&format!("/v1/servers/{id}/screenshot"));
    assert_eq!(shot.status(), 200);
    assert_eq!(shot.headers()["content-type"], "image/png");
    let png = shot.bytes().unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert!(width >= 320 && height >= 200, "{width}x{height}");

    // A writer, a watcher that reads, and one that stopped reading.
    let mut writer =
        ConsoleSocket::open(&serial_url(&agent, &id, json!({"type": "serial"}))).expect("writer");
    let watch = json!({"type": "serial", "read_only": true});
    let mut reader = ConsoleSocket::open(&serial_url(&agent, &id, watch.clone())).unwrap();
    let stuck = ConsoleSocket::open_small_window(&serial_url(&agent, &id, watch.clone()))
        .expect("stuck watcher");
    // ~1 MB of output: the stuck client never stalls the others (the reader reads on a
    // thread of its own meanwhile, as a real client would).
    let reading = std::thread::spawn(move || {
        reader.read_until("flood-8000-done", FLOOD_LIMIT);
        reader
    });
    let flood = Instant::now();
    run_within(
        &mut writer,
        "i=0; while [ $i -lt 8000 ]; do echo flood-$i-0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghij0123456789abcdefghijklmnopqrstuvwxyz; i=$((i+1)); done; echo flood-$((8*1000))-done",
        "flood-8000-done",
        FLOOD_LIMIT,
    );
    let mut reader = reading.join().expect("the reader saw the whole flood");
    eprintln!("flood took {:?}", flood.elapsed());
    // The stuck one is closed as too slow (it lags the output or its send times out).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while metric(
        &agent,
        "hyperlet_console_sessions_ended_total{reason=\"too_slow\"}",
    ) == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the stuck client was never closed: {}",
            agent.get("/metrics").text().unwrap()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    drop(stuck);
    run(&mut writer, "echo still-$((2+2))", "still-4");
    reader.read_until("still-4", ANSWER);

    // 100 idle watchers: bounded memory, and the node's session limit holds.
    let before = rss_kib(&agent);
    let mut idle: Vec<ConsoleSocket> = (0..100)
        .map(|_| ConsoleSocket::open(&serial_url(&agent, &id, watch.clone())).unwrap())
        .collect();
    assert_eq!(metric(&agent, "hyperlet_console_sessions_open "), 102);
    let grown = rss_kib(&agent).saturating_sub(before);
    eprintln!("100 idle console sessions: agent RSS grew by {grown} KiB");
    assert!(
        grown <= RSS_BOUND_100_SESSIONS_KIB,
        "100 idle sessions grew the agent's RSS by {grown} KiB (bound {RSS_BOUND_100_SESSIONS_KIB})"
    );
    let (status, answer) = remote_console(&agent, &id, watch.clone());
    assert_eq!(status, 429, "{answer}");
    assert_eq!(answer["error"]["code"], "too_many_consoles");
    // All of them still get the output.
    run(&mut writer, "echo everyone-$((5*5))", "everyone-25");
    for socket in idle.iter_mut().step_by(10) {
        socket.read_until("everyone-25", ANSWER);
    }
    for socket in idle.drain(..) {
        socket.close();
    }

    // Idle: a paused guest prints nothing; after idle_timeout_secs (10 s) its sessions end.
    let resp = agent.send(
        Method::POST,
        &format!("/v1/servers/{id}/action"),
        Some(&json!({"pause": null})),
    );
    assert_eq!(resp.status(), 202);
    agent.wait_server(&id, "PAUSED", BOOT_LIMIT);
    let (code, reason) = reader.wait_closed(Duration::from_secs(30));
    assert_eq!(code, 4003, "{reason}");
    let (code, _) = writer.wait_closed(Duration::from_secs(30));
    assert_eq!(code, 4003);
    // The closed hub's reader still waits for the silent guest's output; a new session takes
    // the console from it at once (no 409 "held by another client").
    let again = ConsoleSocket::open(&serial_url(&agent, &id, json!({"type": "serial"})))
        .expect("a console while the old reader waits");
    again.close();
    // Once the agent's last session has left, the console is free for other libvirt clients
    // at once — plain `virsh console`, no --force — although the guest prints nothing: the
    // agent lets the console go instead of leaving it to the reader's next output.
    let domain = agent.get_json(&format!("/v1/servers/{id}"))["domain_name"]
        .as_str()
        .unwrap()
        .to_string();
    let deadline = Instant::now() + ANSWER;
    let mut virsh = loop {
        let mut virsh = PtyProcess::spawn(
            std::path::Path::new("virsh"),
            &["-c", "qemu:///system", "console", &domain],
            &[],
        );
        virsh.read_until("Escape character", ANSWER);
        // Refused: virsh says so and exits; given the console: it stays, in raw mode.
        let refused = virsh.shows("error:", Duration::from_secs(3))
            || virsh.child.try_wait().ok().flatten().is_some();
        if !refused {
            break virsh;
        }
        assert!(
            Instant::now() < deadline,
            "virsh console (without --force) still refused after the agent's last session \
             left:\n{}",
            virsh.seen
        );
        drop(virsh);
        std::thread::sleep(Duration::from_millis(500));
    };
    assert!(
        !virsh.termios().local_flags.contains(LocalFlags::ECHO),
        "virsh has the console and its terminal raw:\n{}",
        virsh.seen
    );
    virsh.type_bytes(&[0x1d]);
    assert!(virsh.wait(ANSWER).success(), "{}", virsh.seen);
    let resp = agent.send(
        Method::POST,
        &format!("/v1/servers/{id}/action"),
        Some(&json!({"unpause": null})),
    );
    assert_eq!(resp.status(), 202);
    agent.wait_server(&id, "ACTIVE", BOOT_LIMIT);

    // Shutdown: open sessions are told the agent is going away (1001).
    let mut last = ConsoleSocket::open(&serial_url(&agent, &id, json!({"type": "serial"})))
        .expect("session before shutdown");
    run(&mut last, "echo bye-$((1+1))", "bye-2");
    agent.signal(nix::sys::signal::Signal::SIGTERM);
    let (code, reason) = last.wait_closed(ANSWER);
    assert_eq!(code, 1001, "{reason}");
    assert!(agent.wait_exit(ANSWER).is_some(), "the agent did not exit");
}
