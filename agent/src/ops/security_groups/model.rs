//! Security group, rule and port-security requests, and their validation (everything that
//! needs no lookup). Every refusal names the field at fault.

use crate::net::security::{AddressPair, RuleDirection, MAX_ADDRESS_PAIRS, MAX_GROUPS_PER_PORT};
use crate::net::Ipv4Cidr;
use crate::ops::OpError;
use serde::Deserialize;
use std::net::Ipv4Addr;
use utoipa::ToSchema;

fn check_text(field: &str, value: &str, max: usize) -> Result<(), OpError> {
    if value.chars().count() > max || value.chars().any(char::is_control) {
        return Err(OpError::InvalidInput(format!(
            "{field} must have at most {max} characters and no control characters"
        )));
    }
    Ok(())
}

fn check_group_name(name: &str) -> Result<(), OpError> {
    check_text("name", name, 255)?;
    if name.is_empty() {
        return Err(OpError::InvalidInput("name must not be empty".into()));
    }
    Ok(())
}

/// `POST /v1/security-groups`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroupCreate {
    /// Name, unique on this node.
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub name: String,
    /// Free text [default: empty].
    #[serde(default)]
    #[schema(max_length = 255, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub description: String,
}

impl SecurityGroupCreate {
    /// Checks the fields.
    ///
    /// # Errors
    /// [`OpError::InvalidInput`] naming the field.
    pub fn validate(&self) -> Result<(), OpError> {
        check_group_name(&self.name)?;
        check_text("description", &self.description, 255)
    }
}

/// `PATCH /v1/security-groups/{id}`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroupUpdate {
    /// New name [default: unchanged].
    #[serde(default)]
    #[schema(
        min_length = 1,
        max_length = 255,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"
    )]
    pub name: Option<String>,
    /// New description [default: unchanged].
    #[serde(default)]
    #[schema(max_length = 255, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub description: Option<String>,
}

impl SecurityGroupUpdate {
    /// Checks the fields.
    ///
    /// # Errors
    /// [`OpError::InvalidInput`] naming the field.
    pub fn validate(&self) -> Result<(), OpError> {
        if let Some(name) = &self.name {
            check_group_name(name)?;
        }
        if let Some(d) = &self.description {
            check_text("description", d, 255)?;
        }
        Ok(())
    }
}

/// `POST /v1/security-group-rules`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroupRuleCreate {
    /// The group the rule goes to.
    pub security_group_id: String,
    /// `ingress` (to the port) or `egress` (from it).
    pub direction: RuleDirection,
    /// `IPv4` [default]; IPv6 is refused until the agent has IPv6.
    #[serde(default)]
    #[schema(pattern = "^IPv4$")]
    pub ethertype: Option<String>,
    /// `tcp`, `udp`, `icmp`, `any`, or an IP protocol number 0–255 [default: any].
    #[serde(default)]
    #[schema(pattern = "^(tcp|udp|icmp|any|25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$")]
    pub protocol: Option<String>,
    /// tcp/udp: first destination port (1–65535); icmp: the type (0–255).
    #[serde(default)]
    pub port_range_min: Option<u16>,
    /// tcp/udp: last destination port (≥ min) [default: min]; icmp: the code (0–255, needs
    /// a type).
    #[serde(default)]
    pub port_range_max: Option<u16>,
    /// The other end as an IPv4 address or prefix [default: anywhere]; not with
    /// `remote_group_id`.
    #[serde(default)]
    pub remote_ip_prefix: Option<String>,
    /// The other end as the members of a group; not with `remote_ip_prefix`.
    #[serde(default)]
    pub remote_group_id: Option<String>,
    /// Free text [default: empty].
    #[serde(default)]
    #[schema(max_length = 255, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub description: String,
}

/// A rule request, checked and normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedRule {
    /// Canonical protocol (`tcp`/`udp`/`icmp` for 6/17/1, `None` for any).
    pub protocol: Option<String>,
    /// Port range or icmp type.
    pub port_range_min: Option<u16>,
    /// Port range end or icmp code.
    pub port_range_max: Option<u16>,
    /// The prefix without host bits.
    pub remote_ip_prefix: Option<String>,
}

impl SecurityGroupRuleCreate {
    /// Checks every field and their combination.
    ///
    /// # Errors
    /// [`OpError::InvalidInput`] naming the field at fault.
    pub fn validate(&self) -> Result<CheckedRule, OpError> {
        let bad = |m: String| Err(OpError::InvalidInput(m));
        match self.ethertype.as_deref() {
            None | Some("IPv4") => {}
            Some("IPv6") => {
                return bad("ethertype IPv6 is not supported yet: this agent has no IPv6".into())
            }
            Some(other) => return bad(format!("ethertype {other:?} must be IPv4")),
        }
        check_text("description", &self.description, 255)?;
        let protocol = match self.protocol.as_deref() {
            None | Some("any") => None,
            Some("tcp" | "6") => Some("tcp".to_string()),
            Some("udp" | "17") => Some("udp".to_string()),
            Some("icmp" | "1") => Some("icmp".to_string()),
            Some(n) => match n.parse::<u8>() {
                Ok(v) if v.to_string() == n => Some(n.to_string()),
                _ => {
                    return bad(format!(
                        "protocol {n:?} must be tcp, udp, icmp, any or a number 0-255"
                    ))
                }
            },
        };
        let (min, max) = (self.port_range_min, self.port_range_max);
        let (min, max) = match protocol.as_deref() {
            Some("tcp" | "udp") => match (min, max) {
                (None, None) => (None, None),
                (None, Some(_)) => {
                    return bad("port_range_max needs port_range_min".into());
                }
                (Some(0), _) => return bad("port_range_min must be 1-65535".into()),
                (Some(lo), None) => (Some(lo), Some(lo)),
                (Some(lo), Some(hi)) if hi < lo => {
                    return bad(format!("port_range_max {hi} is below port_range_min {lo}"))
                }
                (Some(lo), Some(hi)) => (Some(lo), Some(hi)),
            },
            Some("icmp") => {
                if min.is_some_and(|t| t > 255) {
                    return bad("port_range_min (the ICMP type) must be 0-255".into());
                }
                if max.is_some_and(|c| c > 255) {
                    return bad("port_range_max (the ICMP code) must be 0-255".into());
                }
                if min.is_none() && max.is_some() {
                    return bad(
                        "port_range_max (the ICMP code) needs port_range_min (the type)".into(),
                    );
                }
                (min, max)
            }
            _ => {
                if min.is_some() {
                    return bad("port_range_min is only for tcp, udp and icmp".into());
                }
                if max.is_some() {
                    return bad("port_range_max is only for tcp, udp and icmp".into());
                }
                (None, None)
            }
        };
        if self.remote_ip_prefix.is_some() && self.remote_group_id.is_some() {
            return bad("remote_group_id cannot be given with remote_ip_prefix: pick one".into());
        }
        let prefix = match &self.remote_ip_prefix {
            None => None,
            Some(p) => Some(normalise_prefix("remote_ip_prefix", p)?.to_string()),
        };
        Ok(CheckedRule {
            protocol,
            port_range_min: min,
            port_range_max: max,
            remote_ip_prefix: prefix,
        })
    }
}

/// An IPv4 address (a /32) or prefix, with the host bits cleared.
///
/// # Errors
/// [`OpError::InvalidInput`] naming `field`.
pub fn normalise_prefix(field: &str, text: &str) -> Result<Ipv4Cidr, OpError> {
    let (addr, len) = text.split_once('/').unwrap_or((text, "32"));
    // A length is 0-32 without leading zeros (`/07` is refused, as the schema says).
    let len = match len.parse::<u8>() {
        Ok(n) if n <= 32 && n.to_string() == len => Some(n),
        _ => None,
    };
    match (addr.parse::<Ipv4Addr>(), len) {
        (Ok(addr), Some(len)) => Ok(Ipv4Cidr::new(addr, len)),
        _ => Err(OpError::InvalidInput(format!(
            "{field} {text:?} is not an IPv4 address or prefix like 198.51.100.0/24"
        ))),
    }
}

/// One allowed address pair as asked.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AddressPairRequest {
    /// An IPv4 address or prefix.
    pub ip_address: String,
    /// The MAC it comes with [default: the port's].
    #[serde(default)]
    #[schema(pattern = "^(?!00:00:00:00:00:00$)[0-9a-fA-F][02468aceACE](:[0-9a-fA-F]{2}){5}$")]
    pub mac_address: Option<String>,
}

/// Checks address pairs against the port's MAC: at most [`MAX_ADDRESS_PAIRS`], each a valid
/// prefix (not 0.0.0.0/0) and unicast MAC; normalised, repeats dropped.
///
/// # Errors
/// [`OpError::InvalidInput`] naming the field.
pub fn check_pairs(
    pairs: &[AddressPairRequest],
    port_mac: &str,
) -> Result<Vec<AddressPair>, OpError> {
    if pairs.len() > MAX_ADDRESS_PAIRS {
        return Err(OpError::InvalidInput(format!(
            "allowed_address_pairs: at most {MAX_ADDRESS_PAIRS} per port"
        )));
    }
    let mut out: Vec<AddressPair> = Vec::new();
    for pair in pairs {
        let prefix = normalise_prefix("allowed_address_pairs ip_address", &pair.ip_address)?;
        if prefix.prefix_len() == 0 {
            return Err(OpError::InvalidInput(
                "allowed_address_pairs ip_address 0.0.0.0/0 would allow every address: disable port_security_enabled instead".into(),
            ));
        }
        let mac = match &pair.mac_address {
            Some(m) => crate::ops::networks::model::normalise_mac(m).map_err(|_| {
                OpError::InvalidInput(format!(
                    "allowed_address_pairs mac_address {m:?} is not a unicast MAC like fa:16:3e:12:34:56"
                ))
            })?,
            None => port_mac.to_string(),
        };
        let pair = AddressPair {
            ip_address: if prefix.prefix_len() == 32 {
                prefix.network().to_string()
            } else {
                prefix.to_string()
            },
            mac_address: mac,
        };
        // The same pair twice (perhaps spelt 10.0.0.9 and 10.0.0.9/32) is kept once.
        if !out.contains(&pair) {
            out.push(pair);
        }
    }
    Ok(out)
}

/// Checks a list of group ids: at most [`MAX_GROUPS_PER_PORT`], no repeats.
///
/// # Errors
/// [`OpError::InvalidInput`] naming `security_groups`.
pub fn check_group_list(groups: &[String]) -> Result<(), OpError> {
    if groups.len() > MAX_GROUPS_PER_PORT {
        return Err(OpError::InvalidInput(format!(
            "security_groups: at most {MAX_GROUPS_PER_PORT} per port"
        )));
    }
    for (i, g) in groups.iter().enumerate() {
        if groups[..i].contains(g) {
            return Err(OpError::InvalidInput(format!(
                "security_groups lists {g} twice"
            )));
        }
    }
    Ok(())
}

/// The port-security fields of `POST /v1/ports` and `PATCH /v1/ports/{id}`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortUpdate {
    /// New name [default: unchanged].
    #[serde(default)]
    #[schema(max_length = 255, pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f]*$")]
    pub name: Option<String>,
    /// Security group ids, in order [default: unchanged].
    #[serde(default)]
    #[schema(max_items = 16)]
    pub security_groups: Option<Vec<String>>,
    /// Anti-spoofing and security groups on or off (off only with no groups) [default:
    /// unchanged].
    #[serde(default)]
    pub port_security_enabled: Option<bool>,
    /// Other addresses the port may send from [default: unchanged].
    #[serde(default)]
    #[schema(max_items = 10)]
    pub allowed_address_pairs: Option<Vec<AddressPairRequest>>,
}

impl PortUpdate {
    /// Checks what needs no lookup.
    ///
    /// # Errors
    /// [`OpError::InvalidInput`] naming the field.
    pub fn validate(&self) -> Result<(), OpError> {
        if let Some(name) = &self.name {
            check_text("name", name, 255)?;
        }
        if let Some(groups) = &self.security_groups {
            check_group_list(groups)?;
        }
        if self.port_security_enabled == Some(false)
            && self.security_groups.as_ref().is_some_and(|g| !g.is_empty())
        {
            return Err(OpError::InvalidInput(
                "port_security_enabled false needs security_groups to be empty".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(v: serde_json::Value) -> Result<CheckedRule, OpError> {
        let mut body = serde_json::json!({"security_group_id": "g", "direction": "ingress"});
        body.as_object_mut()
            .unwrap()
            .extend(v.as_object().unwrap().clone());
        serde_json::from_value::<SecurityGroupRuleCreate>(body)
            .unwrap()
            .validate()
    }

    fn refused(v: serde_json::Value, field: &str) {
        match rule(v.clone()) {
            Err(OpError::InvalidInput(m)) => assert!(m.contains(field), "{v}: {m}"),
            other => panic!("{v}: {other:?}"),
        }
    }

    #[test]
    fn rules_are_normalised() {
        let r = rule(serde_json::json!({"protocol": "6", "port_range_min": 22})).unwrap();
        assert_eq!(r.protocol.as_deref(), Some("tcp"));
        assert_eq!((r.port_range_min, r.port_range_max), (Some(22), Some(22)));
        let r =
            rule(serde_json::json!({"protocol": "any", "remote_ip_prefix": "10.1.2.3/8"})).unwrap();
        assert_eq!(r.protocol, None);
        assert_eq!(r.remote_ip_prefix.as_deref(), Some("10.0.0.0/8"));
        let r = rule(serde_json::json!({"remote_ip_prefix": "10.1.2.3"})).unwrap();
        assert_eq!(r.remote_ip_prefix.as_deref(), Some("10.1.2.3/32"));
        let r =
            rule(serde_json::json!({"protocol": "icmp", "port_range_min": 8, "port_range_max": 0}))
                .unwrap();
        assert_eq!((r.port_range_min, r.port_range_max), (Some(8), Some(0)));
        assert_eq!(
            rule(serde_json::json!({"protocol": "47"}))
                .unwrap()
                .protocol
                .as_deref(),
            Some("47")
        );
    }

    #[test]
    fn bad_rules_name_their_field() {
        refused(serde_json::json!({"ethertype": "IPv6"}), "ethertype");
        refused(serde_json::json!({"protocol": "256"}), "protocol");
        refused(serde_json::json!({"protocol": "06"}), "protocol");
        refused(
            serde_json::json!({"protocol": "tcp", "port_range_min": 0}),
            "port_range_min",
        );
        refused(
            serde_json::json!({"protocol": "tcp", "port_range_max": 5}),
            "port_range_max",
        );
        refused(
            serde_json::json!({"protocol": "tcp", "port_range_min": 80, "port_range_max": 22}),
            "port_range_max",
        );
        refused(
            serde_json::json!({"protocol": "icmp", "port_range_min": 256}),
            "port_range_min",
        );
        refused(
            serde_json::json!({"protocol": "icmp", "port_range_max": 1}),
            "port_range_max",
        );
        refused(serde_json::json!({"port_range_min": 22}), "port_range_min");
        refused(
            serde_json::json!({"protocol": "47", "port_range_max": 22}),
            "port_range_max",
        );
        refused(
            serde_json::json!({"remote_ip_prefix": "10.0.0.0/8", "remote_group_id": "g"}),
            "remote_group_id",
        );
        refused(
            serde_json::json!({"remote_ip_prefix": "10.0.0.0/33"}),
            "remote_ip_prefix",
        );
    }

    #[test]
    fn pairs_are_checked() {
        let pair = |ip: &str, mac: Option<&str>| AddressPairRequest {
            ip_address: ip.into(),
            mac_address: mac.map(Into::into),
        };
        let ok = check_pairs(
            &[
                pair("10.0.0.9", None),
                pair("10.0.1.7/24", Some("FA:16:3E:00:00:09")),
            ],
            "fa:16:3e:00:00:01",
        )
        .unwrap();
        assert_eq!(ok[0].ip_address, "10.0.0.9");
        assert_eq!(ok[0].mac_address, "fa:16:3e:00:00:01");
        assert_eq!(ok[1].ip_address, "10.0.1.0/24");
        assert_eq!(ok[1].mac_address, "fa:16:3e:00:00:09");
        assert!(check_pairs(&[pair("0.0.0.0/0", None)], "fa:16:3e:00:00:01").is_err());
        let once = check_pairs(
            &[pair("10.0.0.9", None), pair("10.0.0.9/32", None)],
            "fa:16:3e:00:00:01",
        );
        assert_eq!(once.unwrap().len(), 1);
        assert!(check_pairs(
            &[pair("10.0.0.9", Some("01:00:5e:00:00:01"))],
            "fa:16:3e:00:00:01"
        )
        .is_err());
    }
}
