//! The EC2-compatible tree: `/<version>/meta-data/…` and `/<version>/user-data`.
//!
//! The layout is nova's. Differences from nova, on purpose:
//!
//! * `instance-id` is the server's UUID, not nova's `i-xxxxxxxx` (derived from an internal
//!   integer id hyperlet does not have); cloud-init accepts any string.
//! * `reservation-id` is `r-` and the first 8 characters of the UUID.
//! * `ami-manifest-path` is `(unknown)` as on AWS for images without a manifest (nova: `FIXME`).
//! * `block-device-mapping/` holds `ami` → `vda` and `root` → `/dev/vda` (virtio root disk).
//! * `security-groups` is empty: security groups are not modelled yet.
//! * `public-ipv4` is empty: there are no floating IPs.
//! * Every version gets the same key list.
//!
//! `public-keys/` (listed only when the server has keys, as in nova) lists `<index>=<name>`
//! with keys sorted by name; `public-keys/<index>/openssh-key` is the key plus a newline.

use super::documents::Documents;
use super::reply::Reply;
use super::source::InstanceMetadata;

/// The EC2 API versions nova serves, oldest first (`latest` is accepted as well).
pub(crate) const VERSIONS: [&str; 9] = [
    "1.0",
    "2007-01-19",
    "2007-03-01",
    "2007-08-29",
    "2007-10-10",
    "2007-12-15",
    "2008-02-01",
    "2008-09-01",
    "2009-04-04",
];

/// The root listing: every version and `latest`.
pub(crate) fn versions() -> Reply {
    let mut all: Vec<&str> = VERSIONS.to_vec();
    all.push("latest");
    Reply::listing(&all)
}

/// Whether `segment` is a version of this tree.
pub(crate) fn is_version(segment: &str) -> bool {
    segment == "latest" || VERSIONS.contains(&segment)
}

/// The keys under `meta-data/` (directories end in `/`).
fn meta_data_keys(md: &InstanceMetadata) -> Vec<&'static str> {
    let mut keys = vec![
        "ami-id",
        "ami-launch-index",
        "ami-manifest-path",
        "block-device-mapping/",
        "hostname",
        "instance-action",
        "instance-id",
        "instance-type",
        "local-hostname",
        "local-ipv4",
        "placement/",
        "public-hostname",
        "public-ipv4",
    ];
    if !md.public_keys.is_empty() {
        keys.push("public-keys/");
    }
    keys.extend(["reservation-id", "security-groups"]);
    keys
}

/// Answers `rest`, the path below `/<version>/` (segments without empty ones); the user data
/// comes from `docs`, the documents rendered from `md`.
pub(crate) fn get(md: &InstanceMetadata, docs: &Documents, rest: &[&str]) -> Reply {
    match rest {
        [] => {
            if md.user_data.is_some() {
                Reply::listing(&["meta-data/", "user-data"])
            } else {
                Reply::listing(&["meta-data/"])
            }
        }
        ["user-data"] => match &docs.user_data {
            Some(data) => Reply::raw(data.clone()),
            None => Reply::not_found("No user data for this instance"),
        },
        ["meta-data", rest @ ..] => meta_data(md, rest),
        _ => Reply::no_such_path(),
    }
}

/// Answers the path below `meta-data/`.
fn meta_data(md: &InstanceMetadata, rest: &[&str]) -> Reply {
    let leaf = match rest {
        [] => return Reply::listing(&meta_data_keys(md)),
        ["ami-id"] => md.image_id.clone(),
        ["ami-launch-index"] => md.launch_index.to_string(),
        ["ami-manifest-path"] => "(unknown)".to_owned(),
        ["block-device-mapping"] => return Reply::listing(&["ami", "root"]),
        ["block-device-mapping", "ami"] => "vda".to_owned(),
        ["block-device-mapping", "root"] => "/dev/vda".to_owned(),
        ["hostname" | "local-hostname" | "public-hostname"] => md.hostname.clone(),
        ["instance-action"] => "none".to_owned(),
        ["instance-id"] => md.uuid.clone(),
        ["instance-type"] => md.instance_type.clone(),
        ["local-ipv4"] => md.local_ipv4.to_string(),
        ["placement"] => return Reply::listing(&["availability-zone"]),
        ["placement", "availability-zone"] => md.availability_zone.clone(),
        ["public-ipv4" | "security-groups"] => String::new(),
        ["reservation-id"] => format!("r-{}", md.uuid.chars().take(8).collect::<String>()),
        ["public-keys", rest @ ..] => return public_keys(md, rest),
        _ => return Reply::no_such_path(),
    };
    Reply::text(leaf)
}

/// Answers the path below `meta-data/public-keys/`.
fn public_keys(md: &InstanceMetadata, rest: &[&str]) -> Reply {
    if md.public_keys.is_empty() {
        return Reply::not_found("No public keys for this instance");
    }
    let key_at = |index: &str| {
        // Only canonical decimal indexes: "0", "1", … (not "00" or "+1").
        if index.len() > 1 && index.starts_with('0') {
            return None;
        }
        let i: usize = index
            .parse()
            .ok()
            .filter(|_| index.bytes().all(|b| b.is_ascii_digit()))?;
        md.public_keys.values().nth(i)
    };
    match rest {
        [] => {
            let lines: Vec<String> = md
                .public_keys
                .keys()
                .enumerate()
                .map(|(i, name)| format!("{i}={name}"))
                .collect();
            Reply::listing(&lines)
        }
        [index] if key_at(index).is_some() => Reply::listing(&["openssh-key"]),
        [index, "openssh-key"] => match key_at(index) {
            Some(key) => Reply::text(format!("{}\n", key.trim_end())),
            None => Reply::no_such_path(),
        },
        _ => Reply::no_such_path(),
    }
}
