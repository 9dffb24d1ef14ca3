//! Who owns the files a volume driver creates on a share: the user and group QEMU runs as, so
//! that QEMU can open them without the files being world-writable.
//!
//! Unless `[plugins.files]` names them (`file_owner`, `file_group`: a name or a number), they
//! come from libvirt's `/etc/libvirt/qemu.conf` (`user = "…"`, `group = "…"`), else the user
//! `libvirt-qemu` (Debian's QEMU user) and that user's primary group (`kvm` on Debian).

use super::VolumeError;
use crate::config::FilesGrant;
use std::path::Path;

/// libvirt's QEMU driver configuration.
const QEMU_CONF: &str = "/etc/libvirt/qemu.conf";
/// The QEMU user when qemu.conf names none (Debian's).
const DEFAULT_USER: &str = "libvirt-qemu";

/// The (uid, gid) owning files created under `grant`.
///
/// # Errors
/// [`VolumeError::Invalid`] naming the setting when the user or group does not exist.
pub fn file_owner(grant: &FilesGrant) -> Result<(u32, u32), VolumeError> {
    let conf = std::fs::read_to_string(QEMU_CONF).unwrap_or_default();
    resolve(
        grant.file_owner.as_deref(),
        grant.file_group.as_deref(),
        &conf,
        Path::new(QEMU_CONF),
    )
}

/// The value of `key = "value"` in a libvirt configuration file (comments skipped).
fn conf_value(conf: &str, key: &str) -> Option<String> {
    conf.lines().find_map(|line| {
        let line = line.split('#').next()?.trim();
        let (k, v) = line.split_once('=')?;
        (k.trim() == key).then(|| v.trim().trim_matches('"').to_owned())
    })
}

fn resolve(
    owner: Option<&str>,
    group: Option<&str>,
    conf: &str,
    conf_path: &Path,
) -> Result<(u32, u32), VolumeError> {
    let (user_text, user_from) = match owner {
        Some(u) => (u.to_owned(), "files.file_owner".to_owned()),
        None => match conf_value(conf, "user") {
            Some(u) => (u, format!("user in {}", conf_path.display())),
            None => (DEFAULT_USER.to_owned(), "the default QEMU user".to_owned()),
        },
    };
    let user_text = user_text.trim_start_matches('+').to_owned();
    let user = match user_text.parse::<u32>() {
        Ok(uid) => nix::unistd::User::from_uid(uid.into()).ok().flatten(),
        Err(_) => nix::unistd::User::from_name(&user_text).ok().flatten(),
    };
    let numeric_uid = user_text.parse::<u32>().ok();
    let uid = match (&user, numeric_uid) {
        (Some(u), _) => u.uid.as_raw(),
        (None, Some(uid)) => uid,
        (None, None) => {
            return Err(VolumeError::Invalid(format!(
                "user {user_text:?} ({user_from}) does not exist: install libvirt-daemon-system \
                 or set files.file_owner to the user QEMU runs as"
            )))
        }
    };
    let group_text = match group {
        Some(g) => Some((g.to_owned(), "files.file_group".to_owned())),
        None if owner.is_none() => {
            conf_value(conf, "group").map(|g| (g, format!("group in {}", conf_path.display())))
        }
        None => None,
    };
    let gid = match group_text {
        Some((text, from)) => {
            let text = text.trim_start_matches('+');
            match text.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => nix::unistd::Group::from_name(text)
                    .ok()
                    .flatten()
                    .map(|g| g.gid.as_raw())
                    .ok_or_else(|| {
                        VolumeError::Invalid(format!(
                            "group {text:?} ({from}) does not exist: set files.file_group to \
                             the group QEMU runs as"
                        ))
                    })?,
            }
        }
        None => match user {
            Some(u) => u.gid.as_raw(),
            None => {
                return Err(VolumeError::Invalid(format!(
                    "user {user_text:?} has no passwd entry to take a group from: set \
                     files.file_group"
                )))
            }
        },
    };
    Ok((uid, gid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_comes_from_the_grant_then_qemu_conf_then_the_default() {
        let conf = Path::new("/etc/libvirt/qemu.conf");
        let root = nix::unistd::User::from_name("root").unwrap().unwrap();
        let root_ids = (root.uid.as_raw(), root.gid.as_raw());
        assert_eq!(resolve(Some("root"), None, "", conf).unwrap(), root_ids);
        assert_eq!(resolve(Some("+0"), Some("0"), "", conf).unwrap(), (0, 0));
        assert_eq!(
            resolve(
                None,
                None,
                "# user = \"x\"\nuser = \"root\"\ngroup = \"+7\"\n",
                conf
            )
            .unwrap(),
            (0, 7)
        );
        let e = resolve(Some("no-such-user-hyperlet"), None, "", conf).unwrap_err();
        assert!(e.to_string().contains("files.file_owner"), "{e}");
        let e = resolve(Some("root"), Some("no-such-group-hyperlet"), "", conf).unwrap_err();
        assert!(e.to_string().contains("files.file_group"), "{e}");
        let e = resolve(None, None, "user = \"no-such-user-hyperlet\"", conf).unwrap_err();
        assert!(e.to_string().contains("qemu.conf"), "{e}");
        // Debian's default: libvirt-qemu in its primary group, kvm.
        let qemu = nix::unistd::User::from_name(DEFAULT_USER)
            .unwrap()
            .expect("libvirt-qemu exists (scripts/setup.sh installs libvirt-daemon-system)");
        assert_eq!(
            resolve(None, None, "#user = \"libvirt-qemu\"\n", conf).unwrap(),
            (qemu.uid.as_raw(), qemu.gid.as_raw())
        );
    }
}
