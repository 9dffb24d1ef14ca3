//! A simulated `netlink` host for native unit tests of network backends.
//!
//! Off wasm, [`crate::network::netlink`] calls land here. The mock keeps a table of links per
//! thread (each test runs on its own thread), behaves like the agent's host for existence,
//! enslaving, up/down and MTU, records every call, and can be told to refuse names (as a grant
//! would) or to lack VLAN support (as a kernel without 8021q does). It does not check a grant:
//! the agent's own tests do that.
//!
//! ```
//! use hyperlet_plugin_sdk::network::netlink;
//! use hyperlet_plugin_sdk::testing::netlink as mock;
//!
//! mock::reset();
//! mock::add_physical("eth1");
//! netlink::create_bridge("brq1").unwrap();
//! netlink::set_master("eth1", "brq1").unwrap();
//! let bridge = mock::link("brq1").unwrap();
//! assert_eq!(mock::link("eth1").unwrap().master_index, Some(bridge.index));
//! assert_eq!(mock::take_calls(), ["create-bridge brq1", "set-master eth1 brq1"]);
//! assert_eq!(netlink::create_bridge("brq1").unwrap_err().code, "exists");
//!
//! mock::set_vlan_supported(false);
//! assert_eq!(netlink::create_vlan("eth1", 5).unwrap_err().code, "unsupported");
//! ```

use std::cell::RefCell;
use std::collections::BTreeMap;

use crate::network::LinkInfo;
use crate::PluginError;

struct State {
    links: BTreeMap<String, LinkInfo>,
    next_index: u32,
    calls: Vec<String>,
    vlan_supported: bool,
    denied: Vec<String>,
}

impl Default for State {
    fn default() -> Self {
        Self {
            links: BTreeMap::new(),
            next_index: 100,
            calls: Vec::new(),
            vlan_supported: true,
            denied: Vec::new(),
        }
    }
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new(State::default());
}

fn with<T>(f: impl FnOnce(&mut State) -> T) -> T {
    STATE.with(|s| f(&mut s.borrow_mut()))
}

/// Forgets every link, call, refusal and setting of this thread.
pub fn reset() {
    with(|s| *s = State::default());
}

/// Adds a link that exists before the plugin runs (a physical interface), down, MTU 1500.
pub fn add_physical(name: &str) {
    add_link(name, None);
}

/// Adds a link of `kind` that exists before the plugin runs, down, MTU 1500.
pub fn add_link(name: &str, kind: Option<&str>) {
    with(|s| insert(s, name, kind));
}

/// Whether VLAN links can be created (default true); false answers `unsupported` as a kernel
/// without 8021q does.
pub fn set_vlan_supported(supported: bool) {
    with(|s| s.vlan_supported = supported);
}

/// Makes every call that names `name` fail with `denied`, as a grant that does not cover it.
pub fn deny(name: &str) {
    with(|s| s.denied.push(name.to_owned()));
}

/// A link's state.
pub fn link(name: &str) -> Option<LinkInfo> {
    with(|s| s.links.get(name).cloned())
}

/// The names of all links, sorted.
pub fn link_names() -> Vec<String> {
    with(|s| s.links.keys().cloned().collect())
}

/// The calls made so far (`"create-bridge brq1"`, `"set-mtu brq1 1450"`, …), oldest first.
pub fn calls() -> Vec<String> {
    with(|s| s.calls.clone())
}

/// The calls made so far, forgetting them.
pub fn take_calls() -> Vec<String> {
    with(|s| std::mem::take(&mut s.calls))
}

fn insert(s: &mut State, name: &str, kind: Option<&str>) {
    s.next_index += 1;
    let info = LinkInfo {
        index: s.next_index,
        name: name.to_owned(),
        kind: kind.map(str::to_owned),
        mtu: Some(1500),
        up: false,
        master_index: None,
    };
    s.links.insert(name.to_owned(), info);
}

fn error(code: &str, message: String) -> PluginError {
    PluginError::new(code, message)
}

/// Records the call, applies refusals, then runs `f`.
fn call<T>(
    words: &[&str],
    f: impl FnOnce(&mut State) -> Result<T, PluginError>,
) -> Result<T, PluginError> {
    with(|s| {
        s.calls.push(words.join(" "));
        if let Some(name) = words[1..].iter().find(|w| s.denied.iter().any(|d| d == *w)) {
            return Err(error(
                "denied",
                format!(
                    "Denied: {}: {name:?} is not covered by the netlink grant",
                    words[0]
                ),
            ));
        }
        f(s)
    })
}

fn existing<'a>(s: &'a mut State, name: &str) -> Result<&'a mut LinkInfo, PluginError> {
    s.links.get_mut(name).ok_or_else(|| {
        error(
            "not-found",
            format!("Network interface {name:?} does not exist"),
        )
    })
}

fn create(s: &mut State, name: &str, kind: &str) -> Result<(), PluginError> {
    if name.is_empty() || name.len() > 15 {
        return Err(error("invalid", format!("Invalid interface name {name:?}")));
    }
    if s.links.contains_key(name) {
        return Err(error(
            "exists",
            format!("Network interface {name:?} already exists"),
        ));
    }
    insert(s, name, Some(kind));
    Ok(())
}

/// The mock of `create-bridge`.
///
/// # Errors
///
/// `exists`, `invalid`, `denied`.
pub fn create_bridge(name: &str) -> Result<(), PluginError> {
    call(&["create-bridge", name], |s| create(s, name, "bridge"))
}

/// The mock of `create-vlan`.
///
/// # Errors
///
/// `unsupported` (see [`set_vlan_supported`]), `not-found` without the parent, `exists`,
/// `denied`.
pub fn create_vlan(parent: &str, vid: u16) -> Result<String, PluginError> {
    let vid_text = vid.to_string();
    call(&["create-vlan", parent, &vid_text], |s| {
        if !(1..=4094).contains(&vid) {
            return Err(error(
                "invalid",
                format!("VLAN id {vid} is outside 1..=4094"),
            ));
        }
        existing(s, parent)?;
        if !s.vlan_supported {
            return Err(error(
                "unsupported",
                "The kernel does not support vlan links: load the 8021q module".into(),
            ));
        }
        let name = format!("{parent}.{vid}");
        create(s, &name, "vlan")?;
        Ok(name)
    })
}

/// The mock of `create-vxlan`.
///
/// # Errors
///
/// `not-found` when `dev` does not exist, `exists`, `invalid`, `denied`.
pub fn create_vxlan(
    vni: u32,
    local: Option<&str>,
    dev: Option<&str>,
    port: Option<u16>,
) -> Result<String, PluginError> {
    let vni_text = vni.to_string();
    let port_text = port.map(|p| p.to_string());
    let mut words = vec!["create-vxlan", &vni_text];
    words.extend(local.map(|l| ["local", l]).into_iter().flatten());
    words.extend(dev.map(|d| ["dev", d]).into_iter().flatten());
    words.extend(
        port_text
            .as_deref()
            .map(|p| ["port", p])
            .into_iter()
            .flatten(),
    );
    call(&words, |s| {
        if !(1..=16_777_215).contains(&vni) {
            return Err(error(
                "invalid",
                format!("VNI {vni} is outside 1..=16777215"),
            ));
        }
        if let Some(local) = local {
            if local.parse::<std::net::Ipv4Addr>().is_err() {
                return Err(error(
                    "invalid",
                    format!("{local:?} is not an IPv4 address"),
                ));
            }
        }
        if let Some(dev) = dev {
            existing(s, dev)?;
        }
        let name = format!("vxlan-{vni}");
        create(s, &name, "vxlan")?;
        Ok(name)
    })
}

/// The mock of `set-master`.
///
/// # Errors
///
/// `not-found` for either link, `denied`.
pub fn set_master(link: &str, bridge: &str) -> Result<(), PluginError> {
    call(&["set-master", link, bridge], |s| {
        let index = existing(s, bridge)?.index;
        existing(s, link)?.master_index = Some(index);
        Ok(())
    })
}

/// The mock of `set-up`.
///
/// # Errors
///
/// `not-found`, `denied`.
pub fn set_up(link: &str) -> Result<(), PluginError> {
    call(&["set-up", link], |s| {
        existing(s, link)?.up = true;
        Ok(())
    })
}

/// The mock of `set-down`.
///
/// # Errors
///
/// `not-found`, `denied`.
pub fn set_down(link: &str) -> Result<(), PluginError> {
    call(&["set-down", link], |s| {
        existing(s, link)?.up = false;
        Ok(())
    })
}

/// The mock of `set-mtu`.
///
/// # Errors
///
/// `invalid` outside 68..=65535, `not-found`, `denied`.
pub fn set_mtu(link: &str, mtu: u32) -> Result<(), PluginError> {
    let mtu_text = mtu.to_string();
    call(&["set-mtu", link, &mtu_text], |s| {
        if !(68..=65535).contains(&mtu) {
            return Err(error("invalid", format!("MTU {mtu} is outside 68..=65535")));
        }
        existing(s, link)?.mtu = Some(mtu);
        Ok(())
    })
}

/// The mock of `delete-link`: ports of a deleted bridge lose their master.
///
/// # Errors
///
/// `not-found`, `denied`.
pub fn delete_link(link: &str) -> Result<(), PluginError> {
    call(&["delete-link", link], |s| {
        let index = existing(s, link)?.index;
        s.links.remove(link);
        for other in s.links.values_mut() {
            if other.master_index == Some(index) {
                other.master_index = None;
            }
        }
        Ok(())
    })
}

/// The mock of `link-info`.
///
/// # Errors
///
/// `denied`.
pub fn link_info(link: &str) -> Result<Option<LinkInfo>, PluginError> {
    call(&["link-info", link], |s| Ok(s.links.get(link).cloned()))
}
