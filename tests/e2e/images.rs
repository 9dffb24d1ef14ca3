//! The image cache: uploads, checksums, single copies, inspection of unsafe images.

use hyperlet_tests::Agent;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Command;

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("qemu-img (apt-get install qemu-utils)");
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn blobs(agent: &Agent) -> usize {
    std::fs::read_dir(agent.state_dir().join("images/blobs"))
        .unwrap()
        .count()
}

#[test]
fn upload_stores_once_by_checksum_and_converts_other_formats() {
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let qcow = dir.path().join("disk.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", qcow.to_str().unwrap(), "64M"]);

    let (status, image) =
        agent.import_image("one", "qcow2", "bare", json!({"os_distro": "test"}), &qcow);
    assert_eq!(status, 200, "{image}");
    assert_eq!(image["status"], "active");
    assert_eq!(image["checksum"], sha256(&qcow));
    assert_eq!(image["os_hash_algo"], "sha256");
    assert_eq!(image["virtual_size"], 64 * 1024 * 1024);
    assert_eq!(image["stored_format"], "qcow2");
    assert_eq!(image["properties"]["os_distro"], "test");

    // The same bytes again, twice at once: still one file in the cache.
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| agent.import_image("two", "qcow2", "bare", json!({}), &qcow));
        let b = s.spawn(|| agent.import_image("three", "qcow2", "bare", json!({}), &qcow));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert_eq!((a.0, b.0), (200, 200));
    assert_eq!(
        blobs(&agent),
        1,
        "identical uploads must share one cached copy"
    );

    // VMDK is converted to qcow2.
    let vmdk = dir.path().join("disk.vmdk");
    qemu_img(&[
        "convert",
        "-q",
        "-f",
        "qcow2",
        "-O",
        "vmdk",
        qcow.to_str().unwrap(),
        vmdk.to_str().unwrap(),
    ]);
    let (status, image) = agent.import_image("vm", "vmdk", "bare", json!({}), &vmdk);
    assert_eq!(status, 200, "{image}");
    assert_eq!(image["stored_format"], "qcow2");
    assert_eq!(blobs(&agent), 2);

    let list = agent.get_json("/v1/images");
    assert_eq!(list["images"].as_array().unwrap().len(), 4);

    // Delete keeps the shared copy until its last image goes.
    let ids: Vec<String> = list["images"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["stored_format"] == "qcow2" && i["disk_format"] == "qcow2")
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    for (n, id) in ids.iter().enumerate() {
        assert_eq!(
            agent
                .send(reqwest::Method::DELETE, &format!("/v1/images/{id}"), None)
                .status(),
            204
        );
        let expected = if n + 1 == ids.len() { 1 } else { 2 };
        assert_eq!(blobs(&agent), expected);
    }
    assert_eq!(agent.get(&format!("/v1/images/{}", ids[0])).status(), 404);
}

#[test]
fn unsafe_or_mislabelled_images_are_refused_with_the_reason() {
    let agent = Agent::start();
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.qcow2");
    let with_backing = dir.path().join("overlay.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "16M"]);
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        "/etc/passwd",
        "-F",
        "raw",
        with_backing.to_str().unwrap(),
        "16M",
    ]);

    let (status, image) = agent.import_image("evil", "qcow2", "bare", json!({}), &with_backing);
    assert_eq!(status, 400);
    assert_eq!(
        image["status"], "queued",
        "a refused upload leaves the image queued"
    );
    assert!(
        image["error"].as_str().unwrap().contains("backing"),
        "{image}"
    );

    // A qcow2 labelled raw.
    let (status, image) = agent.import_image("liar", "raw", "bare", json!({}), &base);
    assert_eq!(status, 400, "{image}");
    assert_eq!(image["status"], "queued");
    assert_eq!(blobs(&agent), 0, "nothing refused reaches the cache");

    // A text VMDK descriptor naming an extent elsewhere on the host.
    let vmdk = dir.path().join("desc.vmdk");
    std::fs::write(
        &vmdk,
        "# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n\
        createType=\"monolithicFlat\"\nRW 2048 FLAT \"/etc/shadow\" 0\n",
    )
    .unwrap();
    let (status, _) = agent.import_image("extent", "vmdk", "bare", json!({}), &vmdk);
    assert_eq!(status, 400);

    // Bad requests create nothing.
    let before = agent.get_json("/v1/images")["images"]
        .as_array()
        .unwrap()
        .len();
    for body in [
        json!({"name": "x", "disk_format": "iso", "container_format": "bare"}),
        json!({"name": "x", "disk_format": "raw", "container_format": "ovf"}),
        json!({"name": "", "disk_format": "raw", "container_format": "bare"}),
        json!({"name": "x", "disk_format": "raw", "container_format": "aki"}),
        json!({"name": "x", "disk_format": "raw", "container_format": "bare", "size": 3}),
    ] {
        let resp = agent.send(reqwest::Method::POST, "/v1/images", Some(&body));
        assert_eq!(resp.status(), 400, "{body}");
    }
    // A kernel_id that cannot name an image is an unknown reference.
    let body = json!({"name": "x", "disk_format": "raw", "container_format": "bare", "properties": {"kernel_id": "nope"}});
    let resp = agent.send(reqwest::Method::POST, "/v1/images", Some(&body));
    assert_eq!(resp.status(), 404, "{body}");
    assert_eq!(
        agent.get_json("/v1/images")["images"]
            .as_array()
            .unwrap()
            .len(),
        before
    );

    // Upload to an active image, wrong content type, unknown image.
    let (status, good) = agent.import_image("good", "qcow2", "bare", json!({}), &base);
    assert_eq!(status, 200);
    let id = good["id"].as_str().unwrap();
    let again = agent
        .client()
        .put(format!("{}/v1/images/{id}/file", agent.url()))
        .bearer_auth(agent.token())
        .header("content-type", "application/octet-stream")
        .body(vec![0u8; 512])
        .send()
        .unwrap();
    assert_eq!(again.status(), 409);
    let created: Value = agent
        .send(
            reqwest::Method::POST,
            "/v1/images",
            Some(&json!({"name": "y", "disk_format": "raw", "container_format": "bare"})),
        )
        .json()
        .unwrap();
    let wrong_type = agent
        .client()
        .put(format!(
            "{}/v1/images/{}/file",
            agent.url(),
            created["id"].as_str().unwrap()
        ))
        .bearer_auth(agent.token())
        .header("content-type", "text/plain")
        .body("abc")
        .send()
        .unwrap();
    assert_eq!(wrong_type.status(), 415);
    assert_eq!(
        agent
            .get("/v1/images/00000000-0000-4000-8000-000000000000")
            .status(),
        404
    );
}

#[test]
fn converting_an_upload_runs_under_the_configured_qemu_img_limits() {
    // 16 MiB of address space: qemu-img cannot even load, and the upload is refused saying
    // why; the default limits (1 GiB, 30 s) convert the same bytes.
    let agent = Agent::start_with_config("[images]\nqemu_img_memory_mb = 16\n");
    let dir = tempfile::tempdir().unwrap();
    let vmdk = dir.path().join("disk.vmdk");
    qemu_img(&["create", "-q", "-f", "vmdk", vmdk.to_str().unwrap(), "64M"]);
    let (status, answer) = agent.import_image("capped", "vmdk", "bare", json!({}), &vmdk);
    assert_eq!(status, 400, "{answer}");
    // The image stays queued with the reason.
    let message = answer["error"].as_str().unwrap_or_default();
    assert!(
        message.contains("resource limits") && message.contains("16 MiB of address space"),
        "{answer}"
    );
    assert_eq!(blobs(&agent), 0);
    assert!(
        std::fs::read_dir(agent.state_dir().join("images/tmp"))
            .unwrap()
            .next()
            .is_none(),
        "a refused conversion leaves nothing behind"
    );
    let agent = Agent::start();
    let (status, image) = agent.import_image("free", "vmdk", "bare", json!({}), &vmdk);
    assert_eq!(status, 200, "{image}");
    assert_eq!(image["stored_format"], "qcow2");
}
