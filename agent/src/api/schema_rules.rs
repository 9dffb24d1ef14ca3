//! Rules the server enforces that the derived schemas cannot state, added to the OpenAPI
//! document so that a generated client (or a schema-driven fuzzer) accepts exactly what the
//! server accepts:
//!
//! * integer ranges of the Rust types (`u32` fields take up to 4294967295, not an `int32`'s
//!   2147483647; `u64` ones up to 9223372036854775807, the largest integer any body may
//!   carry), from utoipa's `uintN` formats;
//! * rules spanning several fields (`disabled_reason` only with `enabled: false`; a NIC names
//!   a network or a port; a server boots from an image or a volume);
//! * map keys and values (image properties, server metadata, public keys) and the formats the
//!   server checks by hand (base64 user data, OpenSSH key types);
//! * the server action body: exactly one of the known actions with its arguments.
//!
//! Each rule names the check it mirrors; change both together.

use serde_json::{json, Value};

/// Adds the rules (see the module documentation) to the document's JSON.
pub fn apply(doc: &mut Value) {
    integer_ranges(doc);
    if let Some(schemas) = doc
        .pointer_mut("/components/schemas")
        .and_then(Value::as_object_mut)
    {
        for (name, patch) in component_rules() {
            if let Some(schema) = schemas.get_mut(name) {
                merge(schema, patch);
            }
        }
    }
    let action_body =
        "/paths/~1v1~1servers~1{id}~1action/post/requestBody/content/application~1json/schema";
    if let Some(body) = doc.pointer_mut(action_body) {
        *body = server_action_schema();
    }
    let console = "/paths/~1v1~1consoles~1{token}/get/parameters";
    if let Some(Value::Array(parameters)) = doc.pointer_mut(console) {
        parameters.extend(websocket_handshake_headers());
    }
}

/// The headers of a WebSocket handshake (RFC 6455 §4.1), which the console route requires
/// (axum's `WebSocketUpgrade` checks them; without them the answer is 400
/// `websocket_required`).
fn websocket_handshake_headers() -> Vec<Value> {
    let header = |name: &str, schema: Value, description: &str| {
        json!({"name": name, "in": "header", "required": true, "schema": schema,
               "description": description})
    };
    vec![
        header(
            "Connection",
            json!({"type": "string", "enum": ["Upgrade"]}),
            "A WebSocket handshake",
        ),
        header(
            "Upgrade",
            json!({"type": "string", "enum": ["websocket"]}),
            "A WebSocket handshake",
        ),
        header(
            "Sec-WebSocket-Version",
            json!({"type": "string", "enum": ["13"]}),
            "RFC 6455",
        ),
        header(
            "Sec-WebSocket-Key",
            json!({"type": "string", "pattern": "^[A-Za-z0-9+/]{22}==$"}),
            "16 random bytes, base64",
        ),
    ]
}

/// Inclusive range of each integer format utoipa writes for a Rust integer type.
fn format_range(format: &str) -> Option<(Value, Value, Option<&'static str>)> {
    Some(match format {
        "int8" => (json!(i8::MIN), json!(i8::MAX), Some("int32")),
        "int16" => (json!(i16::MIN), json!(i16::MAX), Some("int32")),
        "uint8" | "u-int8" => (json!(0), json!(u8::MAX), Some("int32")),
        "uint16" | "u-int16" => (json!(0), json!(u16::MAX), Some("int32")),
        "uint32" | "u-int32" => (json!(0), json!(u32::MAX), Some("int64")),
        // `api/json.rs` refuses integers above i64::MAX in every body.
        "uint64" | "u-int64" => (json!(0), json!(i64::MAX), Some("int64")),
        _ => return None,
    })
}

/// Replaces utoipa's non-standard integer formats by the range of the Rust type (narrowed by
/// any `minimum`/`maximum` the field already declares) and a standard format wide enough.
fn integer_ranges(value: &mut Value) {
    match value {
        Value::Object(map) => {
            let range = map
                .get("format")
                .and_then(Value::as_str)
                .and_then(format_range);
            if let Some((min, max, format)) = range {
                let wider = |a: &Value, b: &Value, pick_max: bool| {
                    let (x, y) = (a.as_f64().unwrap_or(0.0), b.as_f64().unwrap_or(0.0));
                    if (x > y) == pick_max {
                        a.clone()
                    } else {
                        b.clone()
                    }
                };
                let min = map
                    .get("minimum")
                    .map_or(min.clone(), |m| wider(m, &min, true));
                let max = map
                    .get("maximum")
                    .map_or(max.clone(), |m| wider(m, &max, false));
                map.insert("minimum".into(), min);
                map.insert("maximum".into(), max);
                match format {
                    Some(f) => map.insert("format".into(), json!(f)),
                    None => map.remove("format"),
                };
            }
            for child in map.values_mut() {
                integer_ranges(child);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(integer_ranges),
        _ => {}
    }
}

/// A dotted-quad IPv4 address without leading zeros, optionally with a prefix length
/// (`/1`-`/32`, or from `/0` when `zero_ok`), as `normalise_prefix` reads one.
fn ipv4_or_prefix(zero_ok: bool) -> String {
    let lengths = if zero_ok {
        "3[0-2]|[12][0-9]|[0-9]"
    } else {
        "3[0-2]|[12][0-9]|[1-9]"
    };
    format!("^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\\.){{3}}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])(/({lengths}))?$")
}

/// `target` with `patch` merged in.
fn merge_into(mut target: Value, patch: Value) -> Value {
    merge(&mut target, patch);
    target
}

/// ops/security_groups/model.rs PortUpdate::validate and check_pairs: unique groups, pairs
/// of IPv4 addresses or prefixes (not /0), port security off only without groups.
fn port_security_rules() -> Value {
    json!({
        "properties": {
            "security_groups": { "uniqueItems": true },
            "allowed_address_pairs": {
                "items": { "properties": { "ip_address": { "pattern": ipv4_or_prefix(false) } } }
            }
        },
        "anyOf": [
            { "properties": { "port_security_enabled": { "enum": [true, null] } } },
            { "properties": { "security_groups": { "anyOf": [{ "type": "null" }, { "maxItems": 0 }] } } }
        ]
    })
}

/// ops/security_groups/model.rs SecurityGroupRuleCreate::validate: which port fields each
/// protocol takes, and one remote at most. (That `port_range_max` is not below
/// `port_range_min` is arithmetic between values: tests/e2e/fuzz/schemathesis.toml.)
fn rule_rules() -> Value {
    let none = json!({ "type": "null" });
    let port = json!({ "type": "integer", "minimum": 1, "maximum": 65535 });
    let byte = json!({ "type": "integer", "minimum": 0, "maximum": 255 });
    let ports = |protocols: Value, lo: &Value, both: bool| {
        let mut required = vec!["protocol"];
        if both {
            required.extend(["port_range_min", "port_range_max"]);
        }
        json!({
            "required": required,
            "properties": {
                "protocol": { "enum": protocols },
                "port_range_min": lo,
                "port_range_max": if both { lo.clone() } else { none.clone() }
            }
        })
    };
    json!({
        "properties": { "remote_ip_prefix": { "pattern": ipv4_or_prefix(true) } },
        "not": {
            "required": ["remote_ip_prefix", "remote_group_id"],
            "properties": {
                "remote_ip_prefix": { "type": "string" },
                "remote_group_id": { "type": "string" }
            }
        },
        "anyOf": [
            ports(json!(["tcp", "udp", "6", "17"]), &port, false),
            ports(json!(["tcp", "udp", "6", "17"]), &port, true),
            ports(json!(["icmp", "1"]), &byte, false),
            ports(json!(["icmp", "1"]), &byte, true),
            { "properties": { "port_range_min": none, "port_range_max": none } }
        ]
    })
}

/// Merges `patch` into `target`: objects key by key, anything else replaced.
fn merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p,
    }
}

/// Base64 as `base64::engine::general_purpose::STANDARD` decodes it: padded, and the unused
/// bits of the last symbol zero (`ops/servers/model.rs`, user data).
const BASE64: &str =
    "^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/][AQgw]==|[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=)?$";

/// What Rust's `char::is_whitespace` matches (Unicode White_Space), spelled out so that every
/// regex dialect reads it alike.
const WHITESPACE: &str =
    "\\t\\n\\u000b\\f\\r \\u0085\\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";

/// `ops/networks/model.rs` `NetworkCreate::validate`: which of `physical_network` and
/// `segmentation_id` each network type takes.
fn network_rules() -> Value {
    let label = json!({
        "type": "string",
        "minLength": 1,
        "maxLength": 64,
        "pattern": format!("^[^,:{WHITESPACE}]*$")
    });
    let none = json!({ "type": "null" });
    let kind = |kinds: Value| json!({ "enum": kinds });
    json!({
        "anyOf": [
            {
                "properties": {
                    "network_type": kind(json!(["local", null])),
                    "physical_network": none, "segmentation_id": none
                }
            },
            {
                "required": ["network_type", "physical_network"],
                "properties": {
                    "network_type": kind(json!(["flat"])),
                    "physical_network": label, "segmentation_id": none
                }
            },
            {
                "required": ["network_type", "physical_network", "segmentation_id"],
                "properties": {
                    "network_type": kind(json!(["vlan"])),
                    "physical_network": label,
                    "segmentation_id": { "type": "integer", "minimum": 1, "maximum": 4094 }
                }
            },
            {
                "required": ["network_type", "segmentation_id"],
                "properties": {
                    "network_type": kind(json!(["vxlan"])),
                    "physical_network": none,
                    "segmentation_id": { "type": "integer", "minimum": 1, "maximum": 16_777_215 }
                }
            }
        ]
    })
}

/// `ops/images.rs` `ImageCreate::validate`: a kernel (aki) or ramdisk (ari) image is both its
/// container and its disk format; the other container formats take the other disk formats.
fn image_format_rules() -> Value {
    let pair = |container: Value, disk: Value| json!({ "properties": { "container_format": container, "disk_format": disk } });
    json!({
        "anyOf": [
            pair(json!({ "const": "aki" }), json!({ "const": "aki" })),
            pair(json!({ "const": "ari" }), json!({ "const": "ari" })),
            pair(
                json!({ "enum": ["bare", "ami"] }),
                json!({ "not": { "enum": ["aki", "ari"] } })
            )
        ]
    })
}

/// The patches per component schema.
fn component_rules() -> Vec<(&'static str, Value)> {
    let short_name = json!({ "type": "string", "minLength": 1, "maxLength": 255 });
    let mut image = image_format_rules();
    merge(
        &mut image,
        json!({
            "properties": {
                "properties": {
                    "propertyNames": short_name,
                    "additionalProperties": { "type": "string", "maxLength": 65_535 }
                }
            }
        }),
    );
    let both = |a: &str, b: &str| {
        json!({
            "required": [a, b],
            "properties": { a: { "type": "string" }, b: { "type": "string" } }
        })
    };
    vec![
        // ops/consoles.rs create_remote_console: read_only and force are serial options, and a
        // watcher takes nothing over.
        (
            "RemoteConsoleRequest",
            json!({
                "oneOf": [
                    {
                        "properties": { "type": { "enum": ["serial"] } },
                        "not": {
                            "required": ["read_only", "force"],
                            "properties": {
                                "read_only": { "const": true },
                                "force": { "const": true }
                            }
                        }
                    },
                    {
                        "properties": {
                            "type": { "enum": ["novnc"] },
                            "read_only": { "const": false },
                            "force": { "const": false }
                        }
                    }
                ]
            }),
        ),
        ("NetworkCreate", network_rules()),
        // ops/networks/model.rs SubnetCreate::validate.
        (
            "SubnetCreate",
            json!({
                "properties": {
                    "dns_nameservers": { "maxItems": 5, "items": { "format": "ipv4" } },
                    "host_routes": { "maxItems": 20 },
                    "allocation_pools": { "minItems": 1 }
                }
            }),
        ),
        // ops/networks/model.rs PortCreate::validate (with PortUpdate's security fields).
        (
            "PortCreate",
            merge_into(
                json!({ "properties": { "fixed_ips": { "maxItems": 8 } } }),
                port_security_rules(),
            ),
        ),
        // ops/security_groups/model.rs PortUpdate::validate.
        ("PortUpdate", port_security_rules()),
        // ops/security_groups/model.rs SecurityGroupRuleCreate::validate.
        ("SecurityGroupRuleCreate", rule_rules()),
        // ops/scheduler.rs evaluate.
        (
            "EvaluateRequest",
            json!({ "properties": { "hosts": { "maxItems": crate::ops::scheduler::MAX_HOSTS } } }),
        ),
        // ops/volumes/mod.rs create: at most one source.
        (
            "VolumeCreate",
            json!({
                "not": {
                    "anyOf": [
                        both("image_id", "snapshot_id"),
                        both("image_id", "source_volid"),
                        both("snapshot_id", "source_volid")
                    ]
                }
            }),
        ),
        // ops/host.rs ServiceStatusUpdate::validate.
        (
            "ServiceStatusUpdate",
            json!({
                "properties": { "disabled_reason": { "maxLength": 255 } },
                "anyOf": [
                    { "properties": { "enabled": { "const": false } } },
                    { "properties": { "disabled_reason": { "type": "null" } } }
                ]
            }),
        ),
        // ops/networks/ports.rs NetworkRequest::validate.
        (
            "NetworkRequest",
            json!({
                "anyOf": [
                    {
                        "required": ["network_id"],
                        "properties": {
                            "network_id": { "type": "string" },
                            "port_id": { "type": "null" }
                        }
                    },
                    {
                        "required": ["port_id"],
                        "properties": {
                            "port_id": { "type": "string" },
                            "network_id": { "type": "null" },
                            "fixed_ip": { "type": "null" }
                        }
                    }
                ]
            }),
        ),
        // ops/servers/model.rs ServerCreate::validate.
        (
            "ServerCreate",
            json!({
                "properties": {
                    "key_name": { "minLength": 1, "maxLength": 255 },
                    "user_data": { "pattern": BASE64, "maxLength": 87_380 },
                    "metadata": {
                        "maxProperties": 128,
                        "propertyNames": short_name,
                        "additionalProperties": { "type": "string", "maxLength": 255 }
                    },
                    "public_keys": {
                        "propertyNames": short_name,
                        "additionalProperties": {
                            "type": "string",
                            "pattern": "^(ssh-|ecdsa-|sk-)"
                        }
                    },
                    "networks": { "maxItems": 16 }
                },
                "anyOf": [
                    {
                        "required": ["image_id"],
                        "properties": {
                            "image_id": { "minLength": 1 },
                            "boot_volume_id": { "type": "null" }
                        }
                    },
                    {
                        "required": ["boot_volume_id"],
                        "properties": {
                            "image_id": { "maxLength": 0 },
                            "boot_volume_id": { "type": "string" }
                        }
                    }
                ]
            }),
        ),
        // ops/images.rs ImageCreate::validate.
        ("ImageCreate", image),
    ]
}

/// `POST /v1/servers/{id}/action`: exactly one action (`ops/servers/actions.rs`
/// `ServerAction::parse`).
fn server_action_schema() -> Value {
    let no_args = json!({
        "oneOf": [
            { "type": "null" },
            { "type": "object", "maxProperties": 0 }
        ]
    });
    let mut variants: Vec<Value> = [
        "start",
        "stop",
        "pause",
        "unpause",
        "suspend",
        "resume",
        "confirm_resize",
        "revert_resize",
        "live_migrate_abort",
        "live_migrate_force_complete",
    ]
    .iter()
    .map(|name| action(name, no_args.clone()))
    .collect();
    variants.push(action(
        "reboot",
        object(
            json!({ "type": { "type": "string", "enum": ["SOFT", "HARD"] } }),
            &["type"],
        ),
    ));
    variants.push(action(
        "rebuild",
        object(
            json!({ "image_id": { "type": "string", "minLength": 1 } }),
            &["image_id"],
        ),
    ));
    variants.push(action(
        "resize",
        object(
            json!({ "flavor": { "$ref": "#/components/schemas/Flavor" } }),
            &["flavor"],
        ),
    ));
    variants.push(action(
        "console_output",
        json!({
            "oneOf": [
                { "type": "null" },
                object(json!({
                    "length": { "type": ["integer", "null"], "minimum": 1, "maximum": i64::MAX }
                }), &[])
            ]
        }),
    ));
    variants.push(action(
        "set_password",
        object(
            json!({
                "password": {
                    "type": "string",
                    "minLength": 1,
                    "maxLength": 255,
                    "pattern": "^[^\\n]*$"
                }
            }),
            &["password"],
        ),
    ));
    variants.push(action(
        "live_migrate",
        json!({
            "oneOf": [
                { "type": "null" },
                object(json!({
                    "host": destination(),
                    "block_migration": {
                        "description": "Copy the local disks: \"auto\" (default) or true; false needs shared storage",
                        "oneOf": [
                            { "type": "string", "enum": ["auto"] },
                            { "type": "boolean" }
                        ]
                    }
                }), &[])
            ]
        }),
    ));
    variants.push(action(
        "migrate",
        json!({
            "description": "Cold migration: the server is shut down, moved with its disks and VERIFY_RESIZE on the destination (started if it ran) until confirm_resize or revert_resize there",
            "oneOf": [
                { "type": "null" },
                object(json!({
                    "host": destination()
                }), &[])
            ]
        }),
    ));
    json!({
        "description": "Exactly one action: its name as the only key, its arguments as the value",
        "oneOf": variants
    })
}

/// A migration's `host`: a node name, or null for fleet placement.
fn destination() -> Value {
    json!({
        "description": "The destination node; null or absent: fleet placement picks one",
        "type": ["string", "null"],
        "minLength": 1,
        "maxLength": 253,
        "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$"
    })
}

/// `{"<name>": <arguments>}` and nothing else.
fn action(name: &str, arguments: Value) -> Value {
    let mut properties = serde_json::Map::new();
    properties.insert(name.to_string(), arguments);
    json!({
        "type": "object",
        "title": name,
        "required": [name],
        "properties": properties,
        "additionalProperties": false
    })
}

/// A closed object with these properties.
fn object(properties: Value, required: &[&str]) -> Value {
    json!({
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": false
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsigned_formats_become_ranges_narrowed_by_declared_bounds() {
        let mut v = json!({
            "a": { "type": "integer", "format": "uint32", "minimum": 0 },
            "b": { "type": "integer", "format": "u-int64", "minimum": 64, "maximum": 4096 },
            "c": { "type": "integer", "format": "int32" }
        });
        integer_ranges(&mut v);
        assert_eq!(
            v["a"],
            json!({ "type": "integer", "format": "int64", "minimum": 0, "maximum": 4_294_967_295u64 })
        );
        assert_eq!(
            v["b"],
            json!({ "type": "integer", "format": "int64", "minimum": 64, "maximum": 4096 })
        );
        assert_eq!(v["c"], json!({ "type": "integer", "format": "int32" }));
    }

    #[test]
    fn base64_pattern_matches_what_the_decoder_accepts() {
        use base64::Engine;
        let re = regex::Regex::new(BASE64).unwrap();
        for text in [
            "",
            "QQ==",
            "QUI=",
            "QUJD",
            "aGVsbG8gd29ybGQ=",
            "QR==",
            "QUJ=",
            "QQ",
            "QQ=",
            " QQ==",
            "Q===",
            "QUJD\n",
        ] {
            let decodes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .is_ok();
            assert_eq!(re.is_match(text), decodes, "{text:?}");
        }
    }
}
