//! The OpenAPI document: served, equal to the copy in the repository, and true to real answers.

use hyperlet_tests::Agent;
use serde_json::Value;
use std::path::Path;

fn repo_doc() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/openapi.json");
    let text = std::fs::read_to_string(&path).expect("docs/openapi.json");
    serde_json::from_str(&text).unwrap()
}

/// Checks `value` against `schema` (as utoipa writes them): types, required properties and
/// nested objects, following `$ref`s into `components.schemas`.
fn check(doc: &Value, schema: &Value, value: &Value, at: &str) {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.rsplit('/').next().unwrap();
        return check(doc, &doc["components"]["schemas"][name], value, at);
    }
    if let Some(variants) = schema
        .get("oneOf")
        .or(schema.get("anyOf"))
        .and_then(Value::as_array)
    {
        // Nullable references: accept null or any variant that fits.
        if value.is_null() && variants.iter().any(|v| v["type"] == "null") {
            return;
        }
        let refs: Vec<_> = variants.iter().filter(|v| v["type"] != "null").collect();
        assert_eq!(
            refs.len(),
            1,
            "{at}: only single-variant unions are checked"
        );
        return check(doc, refs[0], value, at);
    }
    let types: Vec<&str> = match &schema["type"] {
        Value::String(t) => vec![t.as_str()],
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
        _ => vec![],
    };
    if !types.is_empty() {
        let actual = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_u64() || n.is_i64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        let ok = types.contains(&actual) || (actual == "integer" && types.contains(&"number"));
        assert!(ok, "{at}: {actual} is not one of {types:?}");
    }
    if let Some(required) = schema.get("required").and_then(Value::as_array) {
        for key in required {
            let key = key.as_str().unwrap();
            assert!(
                value.get(key).is_some(),
                "{at}: required property {key} missing"
            );
        }
    }
    if let (Some(props), Some(obj)) = (
        schema.get("properties").and_then(Value::as_object),
        value.as_object(),
    ) {
        for (key, v) in obj {
            let sub = props
                .get(key)
                .unwrap_or_else(|| panic!("{at}: property {key} is not in the document"));
            check(doc, sub, v, &format!("{at}.{key}"));
        }
    }
}

#[test]
fn served_document_equals_the_repository_copy() {
    let agent = Agent::start();
    let served: Value = agent
        .client()
        .get(format!("{}/v1/openapi.json", agent.url()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    assert!(
        served == repo_doc(),
        "docs/openapi.json is stale: regenerate it with `cargo run -p hyperlet -- openapi > docs/openapi.json`"
    );
}

#[test]
fn real_answers_match_the_document() {
    let agent = Agent::start();
    let doc = repo_doc();
    let ok = |path: &str, method: &str, status: &str| {
        doc["paths"][path][method]["responses"][status]["content"]["application/json"]["schema"]
            .clone()
    };
    let host = agent.get_json("/v1/host");
    check(&doc, &ok("/v1/host", "get", "200"), &host, "GET /v1/host");
    let health: Value = agent.get("/healthz").json().unwrap();
    check(&doc, &ok("/healthz", "get", "200"), &health, "GET /healthz");
    let unauthorized: Value = agent
        .client()
        .get(format!("{}/v1/host", agent.url()))
        .send()
        .unwrap()
        .json()
        .unwrap();
    check(
        &doc,
        &ok("/v1/host", "get", "401"),
        &unauthorized,
        "GET /v1/host 401",
    );
    let status: Value = agent
        .client()
        .patch(format!("{}/v1/host", agent.url()))
        .bearer_auth(agent.token())
        .json(&serde_json::json!({"enabled": false, "disabled_reason": "doc"}))
        .send()
        .unwrap()
        .json()
        .unwrap();
    check(
        &doc,
        &ok("/v1/host", "patch", "200"),
        &status,
        "PATCH /v1/host",
    );

    let dir = tempfile::tempdir().unwrap();
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, vec![0u8; 1 << 20]).unwrap();
    let (_, image) = agent.import_image("doc", "raw", "bare", serde_json::json!({"a": "b"}), &raw);
    check(
        &doc,
        &ok("/v1/images/{id}", "get", "200"),
        &image,
        "GET /v1/images/{id}",
    );
    let list = agent.get_json("/v1/images");
    check(
        &doc,
        &ok("/v1/images", "get", "200"),
        &list,
        "GET /v1/images",
    );
    let servers = agent.get_json("/v1/servers");
    check(
        &doc,
        &ok("/v1/servers", "get", "200"),
        &servers,
        "GET /v1/servers",
    );
}

#[test]
fn a_real_server_matches_the_document() {
    let _vm = hyperlet_tests::vm_shared();
    let agent = Agent::start_with_config(crate::servers::CONFIG);
    let doc = repo_doc();
    let image = crate::servers::import_guest(&agent, "");
    let id = crate::servers::create(
        &agent,
        "doc",
        &image,
        serde_json::json!({"vcpus": 1, "ram_mb": 128, "disk_gb": 1}),
    );
    let server = agent.wait_server(&id, "ACTIVE", std::time::Duration::from_secs(120));
    let response = |path: &str| {
        doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
            .clone()
    };
    check(
        &doc,
        &response("/v1/servers/{id}"),
        &server,
        "GET /v1/servers/{id}",
    );
    let stats = agent.get_json(&format!("/v1/servers/{id}/stats"));
    check(
        &doc,
        &response("/v1/servers/{id}/stats"),
        &stats,
        "GET /v1/servers/{id}/stats",
    );
}

/// What a controller may leave out of a scheduler request, the document says the value of.
#[test]
fn optional_scheduler_fields_state_their_defaults() {
    let doc = repo_doc();
    for name in ["EvaluateRequest", "RequestSpec", "HostState"] {
        let schema = &doc["components"]["schemas"][name];
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let properties = schema["properties"].as_object().unwrap();
        for (field, property) in properties {
            if !required.contains(&field.as_str()) {
                assert!(
                    property.get("default").is_some(),
                    "{name}.{field} is optional but the document states no default: {property}"
                );
            }
        }
    }
    let host = &doc["components"]["schemas"]["HostState"]["properties"];
    assert_eq!(host["traits"]["default"], serde_json::json!([]));
    assert_eq!(host["availability_zone"]["default"], "nova");
}
