//! The OpenStack tree: `/openstack/<version>/{meta_data.json, network_data.json, password,
//! user_data, vendor_data.json, vendor_data2.json}`.
//!
//! As in nova, a file appears from the version that introduced it: `password` from
//! 2013-04-04, `vendor_data.json` from 2013-10-17, `network_data.json` from 2015-10-15 and
//! `vendor_data2.json` from 2016-10-06; `user_data` only when the server has some. The fields
//! of `meta_data.json` are the same in every version (older clients ignore the newer ones).

use bytes::Bytes;

use super::documents::Documents;
use super::reply::Reply;
use super::source::InstanceMetadata;

/// The OpenStack metadata versions nova serves, oldest first (`latest` is accepted as well).
pub(crate) const VERSIONS: [&str; 8] = [
    "2012-08-10",
    "2013-04-04",
    "2013-10-17",
    "2015-10-15",
    "2016-06-30",
    "2016-10-06",
    "2017-02-22",
    "2018-08-27",
];

/// The files of the tree with the version that introduced each.
const FILES: [(&str, &str); 6] = [
    ("meta_data.json", "2012-08-10"),
    ("network_data.json", "2015-10-15"),
    ("password", "2013-04-04"),
    ("user_data", "2012-08-10"),
    ("vendor_data.json", "2013-10-17"),
    ("vendor_data2.json", "2016-10-06"),
];

/// What a path of the tree names.
#[derive(Debug)]
pub(crate) enum Target {
    /// Something read-only, already rendered (or a 404).
    Read(Reply),
    /// The `password` file: GET reads it, POST sets it.
    Password,
}

/// Whether `version` (or `latest`) has `file`, for a server with or without user data.
fn has_file(version: &str, file: &str, has_user_data: bool) -> bool {
    if file == "user_data" && !has_user_data {
        return false;
    }
    FILES
        .iter()
        .any(|(name, since)| *name == file && (version == "latest" || version >= *since))
}

/// Whether `segment` is a version of this tree.
fn is_version(segment: &str) -> bool {
    segment == "latest" || VERSIONS.contains(&segment)
}

/// Resolves `rest`, the path below `/openstack/` (segments without empty ones); the files
/// come from `docs`, the documents rendered from `md`.
pub(crate) fn resolve(md: &InstanceMetadata, docs: &Documents, rest: &[&str]) -> Target {
    let has_user_data = md.user_data.is_some();
    match rest {
        [] => {
            let mut all: Vec<&str> = VERSIONS.to_vec();
            all.push("latest");
            Target::Read(Reply::listing(&all))
        }
        [version] if is_version(version) => {
            let files: Vec<&str> = FILES
                .iter()
                .map(|(name, _)| *name)
                .filter(|name| has_file(version, name, has_user_data))
                .collect();
            Target::Read(Reply::listing(&files))
        }
        [version, file] if is_version(version) && has_file(version, file, has_user_data) => {
            match *file {
                "password" => Target::Password,
                "meta_data.json" => Target::Read(Reply::json_bytes(docs.meta_data())),
                "network_data.json" => Target::Read(Reply::json_bytes(docs.network_data.clone())),
                "vendor_data.json" => Target::Read(Reply::json_bytes(docs.vendor_data.clone())),
                "vendor_data2.json" => Target::Read(Reply::json_bytes(Bytes::from_static(b"{}"))),
                "user_data" => Target::Read(Reply::raw(docs.user_data.clone().unwrap_or_default())),
                _ => Target::Read(Reply::no_such_path()),
            }
        }
        [version, "user_data"] if is_version(version) => {
            Target::Read(Reply::not_found("No user data for this instance"))
        }
        _ => Target::Read(Reply::no_such_path()),
    }
}
