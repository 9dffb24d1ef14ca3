//! Creates with a client-chosen `id`: a controller's retry (same id, same body) gets the
//! existing resource, never a duplicate; the same id with another body is 409; an id that is
//! not a UUID is 400. Networks, subnets, ports, images and servers here; volumes in
//! `volumes.rs` (they need a backend).

use hyperlet_tests::Agent;
use reqwest::Method;
use serde_json::{json, Value};

/// Posts `body` with a fresh id, repeats it (keys in another order, the id in capitals), then
/// changes one field; checks the three answers and that one resource exists. Returns it.
pub fn check_client_id(
    agent: &Agent,
    path: &str,
    status: u16,
    body: Value,
    changed: Value,
) -> Value {
    let id = uuid::Uuid::new_v4().to_string();
    let mut first = body.clone();
    first["id"] = json!(id);
    let resp = agent.send(Method::POST, path, Some(&first));
    let code = resp.status();
    let created: Value = resp.json().expect("JSON");
    assert_eq!(code, status, "POST {path} {first} → {created}");
    assert_eq!(created["id"], json!(id), "{created}");

    // The same body again, spelled differently: keys reversed, the id in capitals.
    let mut fields: Vec<(String, Value)> = body
        .as_object()
        .expect("object")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    fields.reverse();
    let mut text = format!("{{\"id\": \"{}\"", id.to_uppercase());
    for (k, v) in fields {
        text.push_str(&format!(", {}: {}", Value::String(k), v));
    }
    text.push('}');
    let resp = agent
        .client()
        .post(format!("{}{path}", agent.url()))
        .bearer_auth(agent.token())
        .header("content-type", "application/json")
        .body(text.clone())
        .send()
        .expect("POST");
    assert_eq!(resp.status(), status, "the repeat {text}");
    let repeated: Value = resp.json().expect("JSON");
    assert_eq!(repeated["id"], json!(id), "the same resource: {repeated}");

    let mut other = changed.clone();
    other["id"] = json!(id);
    let resp = agent.send(Method::POST, path, Some(&other));
    assert_eq!(resp.status(), 409, "another body with the same id: {other}");
    let answer: Value = resp.json().expect("JSON");
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("different request")),
        "{answer}"
    );

    let mut bad = body.clone();
    bad["id"] = json!("not-a-uuid");
    let resp = agent.send(Method::POST, path, Some(&bad));
    assert_eq!(resp.status(), 400, "a bad id");

    let list = agent.get_json(path);
    let key = path.trim_start_matches("/v1/");
    let count = list[key]
        .as_array()
        .expect("list")
        .iter()
        .filter(|r| r["id"] == json!(id))
        .count();
    assert_eq!(count, 1, "one {key} with that id: {list}");
    created
}

#[test]
fn networks_subnets_ports_and_images_take_client_ids_once() {
    let agent = Agent::start_with_config(&crate::networks::net_config());
    let network = check_client_id(
        &agent,
        "/v1/networks",
        202,
        json!({"name": "shared", "network_type": "local"}),
        json!({"name": "shared-2", "network_type": "local"}),
    );
    let net = network["id"].as_str().expect("id");
    agent.wait_settled(&format!("/v1/networks/{net}"), &["BUILD"]);
    let subnet = check_client_id(
        &agent,
        "/v1/subnets",
        201,
        json!({"network_id": net, "cidr": "10.77.0.0/24"}),
        json!({"network_id": net, "cidr": "10.77.0.0/24", "name": "other"}),
    );
    assert_eq!(subnet["cidr"], "10.77.0.0/24");
    let port = check_client_id(
        &agent,
        "/v1/ports",
        201,
        json!({"network_id": net, "name": "p1"}),
        json!({"network_id": net, "name": "p2"}),
    );
    assert_eq!(port["name"], "p1");
    check_client_id(
        &agent,
        "/v1/images",
        201,
        json!({"name": "img", "disk_format": "raw", "container_format": "bare"}),
        json!({"name": "img", "disk_format": "qcow2", "container_format": "bare"}),
    );

    // An id taken by a resource created without one is refused too.
    let resp = agent.send(
        Method::POST,
        "/v1/networks",
        Some(&json!({"name": "plain", "network_type": "local"})),
    );
    assert_eq!(resp.status(), 202);
    let plain: Value = resp.json().expect("JSON");
    let resp = agent.send(
        Method::POST,
        "/v1/networks",
        Some(&json!({"id": plain["id"], "name": "plain", "network_type": "local"})),
    );
    assert_eq!(
        resp.status(),
        409,
        "an id made by the agent is not a client's"
    );

    // A refused create leaves the id free for a corrected request.
    let id = uuid::Uuid::new_v4().to_string();
    let resp = agent.send(
        Method::POST,
        "/v1/subnets",
        Some(&json!({"id": id, "network_id": net, "cidr": "10.77.0.0/33"})),
    );
    assert_eq!(resp.status(), 400);
    let resp = agent.send(
        Method::POST,
        "/v1/subnets",
        Some(&json!({"id": id, "network_id": net, "cidr": "10.78.0.0/24"})),
    );
    assert_eq!(resp.status(), 201, "the corrected create runs");
    crate::networks::remove_network(&agent, plain["id"].as_str().expect("id"));
    let resp = agent.send(
        Method::DELETE,
        &format!("/v1/ports/{}", port["id"].as_str().expect("id")),
        None,
    );
    assert!(resp.status().is_success());
    crate::networks::remove_network(&agent, net);
}

#[test]
fn a_server_created_twice_with_one_id_is_one_server() {
    let _vm = hyperlet_tests::vm_shared();
    let agent = Agent::start_with_config(crate::servers::CONFIG);
    let image = crate::servers::import_guest(&agent, "");
    let flavor = crate::servers::flavor(1, 128);
    let server = check_client_id(
        &agent,
        "/v1/servers",
        202,
        json!({"name": "retried", "image_id": image, "flavor": flavor}),
        json!({"name": "retried", "image_id": image, "flavor": crate::servers::flavor(1, 192)}),
    );
    let id = server["id"].as_str().expect("id");
    agent.wait_server(id, "ACTIVE", std::time::Duration::from_secs(120));
    let resp = agent.send(Method::DELETE, &format!("/v1/servers/{id}"), None);
    assert!(resp.status().is_success());
    agent.wait_server_gone(id, std::time::Duration::from_secs(60));
}
