//! A simulated `lvm` host for native unit tests of volume drivers.
//!
//! Off wasm, [`crate::volume::lvm`] calls land here. The mock keeps volume groups with their
//! LVs per thread (each test runs on its own thread), accounts space as LVM does (thick LVs,
//! snapshots and thin pools take space from the group, thin LVs from their pool), refuses what
//! the agent's host refuses (a group that was not added is `denied`, as an ungranted one; a
//! name with `/` or `..` is `denied`; removing an origin with snapshots is `in-use`; running
//! out of space is `no-space`) and records every call.
//!
//! ```
//! use hyperlet_plugin_sdk::testing::lvm as mock;
//! use hyperlet_plugin_sdk::volume::{lvm, LvCreateRequest};
//!
//! mock::reset();
//! mock::add_vg("cinder-volumes", 10);
//! let request = |name: &str| LvCreateRequest {
//!     vg: "cinder-volumes".into(),
//!     name: name.into(),
//!     size_gb: 4,
//!     thin_pool: None,
//! };
//! lvm::lv_create(&request("volume-1")).unwrap();
//! lvm::lv_snapshot("cinder-volumes", "volume-1", "_snapshot-1", Some(4)).unwrap();
//! assert_eq!(lvm::lv_remove("cinder-volumes", "volume-1").unwrap_err().code, "in-use");
//! assert_eq!(lvm::lv_create(&request("volume-2")).unwrap_err().code, "no-space");
//! assert_eq!(lvm::vg_info("vg-root").unwrap_err().code, "denied");
//! assert_eq!(mock::take_calls()[0], "lv-create cinder-volumes volume-1 4");
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::volume::{Lv, LvCreateRequest, ThinPoolStats, VgStats};
use crate::PluginError;

const GIB: u64 = 1 << 30;

#[derive(Clone, Debug)]
struct MockLv {
    size: u64,
    origin: Option<String>,
    pool: Option<String>,
    is_pool: bool,
}

#[derive(Default)]
struct Vg {
    size: u64,
    lvs: BTreeMap<String, MockLv>,
}

#[derive(Default)]
struct State {
    vgs: BTreeMap<String, Vg>,
    calls: Vec<String>,
    copies: Vec<(String, String, String)>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

fn with<T>(f: impl FnOnce(&mut State) -> T) -> T {
    STATE.with(|s| f(&mut s.borrow_mut()))
}

/// Forgets every volume group and call of this thread.
pub fn reset() {
    with(|s| *s = State::default());
}

/// Adds a (granted) volume group of `size_gb`.
pub fn add_vg(vg: &str, size_gb: u64) {
    with(|s| {
        s.vgs.insert(
            vg.to_owned(),
            Vg {
                size: size_gb * GIB,
                lvs: BTreeMap::new(),
            },
        );
    });
}

/// Adds a thin pool of `size_gb` to `vg` (taking that space from the group).
pub fn add_thin_pool(vg: &str, pool: &str, size_gb: u64) {
    with(|s| {
        let vg = s.vgs.get_mut(vg).expect("add the VG first");
        vg.lvs.insert(
            pool.to_owned(),
            MockLv {
                size: size_gb * GIB,
                origin: None,
                pool: None,
                is_pool: true,
            },
        );
    });
}

/// The LVs of `vg` as `lv-list` answers them.
pub fn lvs(vg: &str) -> Vec<Lv> {
    lv_list(vg).unwrap_or_default()
}

/// The LV copies made so far, `(vg, source, target)`.
pub fn copies() -> Vec<(String, String, String)> {
    with(|s| s.copies.clone())
}

/// The calls made so far (`"lv-create vg volume-1 4"`, …), oldest first, forgetting them.
pub fn take_calls() -> Vec<String> {
    with(|s| std::mem::take(&mut s.calls))
}

fn error(code: &str, message: String) -> PluginError {
    PluginError::new(code, message)
}

fn check_name(name: &str) -> Result<(), PluginError> {
    if name.contains('/') || name.contains("..") {
        return Err(error(
            "denied",
            format!("Invalid logical volume name {name:?}: it would leave its volume group"),
        ));
    }
    if name.is_empty()
        || name.starts_with('-')
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'+' | b'.' | b'-'))
    {
        return Err(error(
            "invalid",
            format!("Invalid logical volume name {name:?}"),
        ));
    }
    Ok(())
}

/// Records the call, then runs `f` on the (granted) group.
fn call<T>(
    words: &[&str],
    vg: &str,
    f: impl FnOnce(&mut Vg) -> Result<T, PluginError>,
) -> Result<T, PluginError> {
    with(|s| {
        s.calls.push(words.join(" "));
        let vg_ref = s
            .vgs
            .get_mut(vg)
            .ok_or_else(|| error("denied", format!("VG {vg} is not granted to this driver")))?;
        f(vg_ref)
    })
}

fn used(vg: &Vg) -> u64 {
    vg.lvs
        .values()
        .filter(|lv| lv.pool.is_none())
        .map(|lv| lv.size)
        .sum()
}

fn room(vg: &Vg, vg_name: &str, bytes: u64) -> Result<(), PluginError> {
    let free = vg.size - used(vg);
    if bytes > free {
        return Err(error(
            "no-space",
            format!(
                "lvcreate failed: Volume group \"{vg_name}\" has insufficient free space ({} extents): {} required.",
                free / (4 << 20),
                bytes / (4 << 20)
            ),
        ));
    }
    Ok(())
}

fn missing(vg: &str, name: &str) -> PluginError {
    error(
        "not-found",
        format!("Logical volume {vg}/{name} does not exist"),
    )
}

/// The mock of `vg-info`.
///
/// # Errors
///
/// `denied`.
pub fn vg_info(vg: &str) -> Result<VgStats, PluginError> {
    call(&["vg-info", vg], vg, |g| {
        Ok(VgStats {
            size_bytes: g.size,
            free_bytes: g.size - used(g),
            lv_count: g.lvs.len() as u32,
        })
    })
}

/// The mock of `thin-pool-info`: a pool's used space is what its thin LVs hold (their full
/// virtual size, a simplification).
///
/// # Errors
///
/// `denied`, `invalid` when the LV is not a pool.
pub fn thin_pool_info(vg: &str, pool: &str) -> Result<Option<ThinPoolStats>, PluginError> {
    call(&["thin-pool-info", vg, pool], vg, |g| {
        check_name(pool)?;
        let Some(lv) = g.lvs.get(pool) else {
            return Ok(None);
        };
        if !lv.is_pool {
            return Err(error("invalid", format!("{vg}/{pool} is not a thin pool")));
        }
        let used: u64 = g
            .lvs
            .values()
            .filter(|l| l.pool.as_deref() == Some(pool))
            .map(|l| l.size)
            .sum();
        Ok(Some(ThinPoolStats {
            size_bytes: lv.size,
            used_bytes: used.min(lv.size),
        }))
    })
}

/// The mock of `lv-create`.
///
/// # Errors
///
/// `denied`, `invalid`, `no-space`, `failed` (name taken), `not-found` (no such pool).
pub fn lv_create(request: &LvCreateRequest) -> Result<(), PluginError> {
    let size = request.size_gb.to_string();
    let mut words = vec!["lv-create", &request.vg, &request.name, &size];
    if let Some(pool) = &request.thin_pool {
        words.push(pool);
    }
    let vg = request.vg.clone();
    call(&words, &request.vg, |g| {
        check_name(&request.name)?;
        if request.size_gb == 0 {
            return Err(error("invalid", "Invalid size 0 GiB".into()));
        }
        if g.lvs.contains_key(&request.name) {
            return Err(error(
                "failed",
                format!(
                    "lvcreate failed: Logical Volume \"{}\" already exists",
                    request.name
                ),
            ));
        }
        let bytes = request.size_gb * GIB;
        if let Some(pool) = &request.thin_pool {
            if !g.lvs.get(pool).is_some_and(|l| l.is_pool) {
                return Err(error(
                    "failed",
                    format!("lvcreate failed: Thin pool {pool} not found"),
                ));
            }
        } else {
            room(g, &vg, bytes)?;
        }
        g.lvs.insert(
            request.name.clone(),
            MockLv {
                size: bytes,
                origin: None,
                pool: request.thin_pool.clone(),
                is_pool: false,
            },
        );
        Ok(())
    })
}

/// The mock of `lv-extend`.
///
/// # Errors
///
/// `denied`, `invalid` (shrink), `not-found`, `no-space`.
pub fn lv_extend(vg: &str, name: &str, new_size_gb: u64) -> Result<(), PluginError> {
    let size = new_size_gb.to_string();
    call(&["lv-extend", vg, name, &size], vg, |g| {
        check_name(name)?;
        let lv = g.lvs.get(name).cloned().ok_or_else(|| missing(vg, name))?;
        let bytes = new_size_gb * GIB;
        if bytes < lv.size {
            return Err(error(
                "invalid",
                format!("Refusing to shrink {vg}/{name} to {new_size_gb} GiB"),
            ));
        }
        if lv.pool.is_none() {
            room(g, vg, bytes - lv.size)?;
        }
        g.lvs.get_mut(name).expect("present").size = bytes;
        Ok(())
    })
}

/// The mock of `lv-remove`.
///
/// # Errors
///
/// `denied`, `not-found`, `in-use` (an origin with snapshots).
pub fn lv_remove(vg: &str, name: &str) -> Result<(), PluginError> {
    call(&["lv-remove", vg, name], vg, |g| {
        check_name(name)?;
        if !g.lvs.contains_key(name) {
            return Err(missing(vg, name));
        }
        let snapshots: Vec<&String> = g
            .lvs
            .iter()
            .filter(|(_, l)| l.origin.as_deref() == Some(name))
            .map(|(n, _)| n)
            .collect();
        if !snapshots.is_empty() {
            return Err(error(
                "in-use",
                format!(
                    "Logical volume {vg}/{name} has snapshots ({snapshots:?}); remove them first"
                ),
            ));
        }
        g.lvs.remove(name);
        Ok(())
    })
}

/// The mock of `lv-snapshot`.
///
/// # Errors
///
/// `denied`, `not-found` (origin), `failed` (a thin snapshot of a thick origin, a name
/// taken), `no-space`.
pub fn lv_snapshot(
    vg: &str,
    origin: &str,
    snapshot_name: &str,
    size_gb: Option<u64>,
) -> Result<(), PluginError> {
    let size = size_gb.map_or("thin".to_owned(), |s| s.to_string());
    call(
        &["lv-snapshot", vg, origin, snapshot_name, &size],
        vg,
        |g| {
            check_name(origin)?;
            check_name(snapshot_name)?;
            let source = g
                .lvs
                .get(origin)
                .cloned()
                .ok_or_else(|| missing(vg, origin))?;
            if g.lvs.contains_key(snapshot_name) {
                return Err(error(
                    "failed",
                    format!("lvcreate failed: Logical Volume \"{snapshot_name}\" already exists"),
                ));
            }
            let lv = match size_gb {
                Some(size_gb) => {
                    room(g, vg, size_gb * GIB)?;
                    MockLv {
                        size: size_gb * GIB,
                        origin: Some(origin.to_owned()),
                        pool: None,
                        is_pool: false,
                    }
                }
                None => {
                    let Some(pool) = source.pool.clone() else {
                        return Err(error(
                        "failed",
                        "lvcreate failed: Please specify either size or extents with snapshots."
                            .into(),
                    ));
                    };
                    MockLv {
                        size: source.size,
                        origin: Some(origin.to_owned()),
                        pool: Some(pool),
                        is_pool: false,
                    }
                }
            };
            g.lvs.insert(snapshot_name.to_owned(), lv);
            Ok(())
        },
    )
}

/// The mock of `lv-copy`: records the copy (see [`copies`]).
///
/// # Errors
///
/// `denied`, `not-found`, `invalid` (a smaller target).
pub fn lv_copy(vg: &str, source: &str, target: &str) -> Result<(), PluginError> {
    let result = call(&["lv-copy", vg, source, target], vg, |g| {
        check_name(source)?;
        check_name(target)?;
        let from = g.lvs.get(source).ok_or_else(|| missing(vg, source))?.size;
        let to = g.lvs.get(target).ok_or_else(|| missing(vg, target))?.size;
        if to < from {
            return Err(error(
                "invalid",
                format!("{vg}/{target} is smaller than {vg}/{source}"),
            ));
        }
        Ok(())
    });
    if result.is_ok() {
        with(|s| {
            s.copies
                .push((vg.to_owned(), source.to_owned(), target.to_owned()))
        });
    }
    result
}

/// The mock of `lv-list`.
///
/// # Errors
///
/// `denied`.
pub fn lv_list(vg: &str) -> Result<Vec<Lv>, PluginError> {
    call(&["lv-list", vg], vg, |g| {
        Ok(g.lvs
            .iter()
            .map(|(name, lv)| Lv {
                name: name.clone(),
                size_bytes: lv.size,
                origin: lv.origin.clone(),
            })
            .collect())
    })
}
