//! What a plugin answers, read under bounds: the one place where text and lists coming from a
//! plugin enter the agent.
//!
//! Answers are lifted lazily ([`WasmStr`], [`WasmList`]): the host first sees only lengths and
//! pointers into the guest's memory, checks them against what it asked (a filter answers one
//! flag per host it was sent, never more), and copies only what it keeps:
//!
//! * text meant for people (error codes and messages, filter reasons, traps, log lines and
//!   captured stdout/stderr) is cut to [`MAX_TEXT_BYTES`] with a note of how much was cut
//!   ([`cap`]); a filter's reasons together keep at most [`MAX_REASONS_BYTES`];
//! * names and paths (a bridge, a block device, an NFS server) are refused beyond
//!   [`MAX_NAME_BYTES`] — cutting would change their meaning;
//! * what the host keeps of an answer is counted against the instance's memory budget
//!   ([`super::memory::MemoryBudget`]): the guest's linear memories plus the answer must fit in
//!   the plugin's `memory_limit_mb`.
//!
//! A 200 MiB error message thus costs the host 1 KiB, and a filter answer with millions of
//! reasons for ten hosts is refused before one of them is copied.

use super::bindings::volume::hyperlet::volume::types as volume_wit;
use super::host::HostState;
use std::mem::size_of;
use wasmtime::component::{ComponentType, Lift, WasmList, WasmStr};
use wasmtime::Store;

/// Most bytes kept of one text from a plugin (a message, a reason, a trap, a log line).
pub const MAX_TEXT_BYTES: usize = 1024;
/// Most bytes of all the reasons of one filter answer.
pub const MAX_REASONS_BYTES: usize = 1024 * 1024;
/// Longest name or path an answer may hold.
pub const MAX_NAME_BYTES: usize = 4096;
/// What the host's allocator spends per heap string beyond its bytes (an estimate).
const ALLOC_OVERHEAD: usize = 32;

/// `text` cut to at most [`MAX_TEXT_BYTES`] (on a character boundary), followed by
/// `… (N bytes cut)` when anything was cut.
pub fn cap(text: &str) -> String {
    cap_to(text, MAX_TEXT_BYTES)
}

/// `text` cut to at most `max` bytes, with the note.
fn cap_to(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes cut)", &text[..end], text.len() - end)
}

/// A `plugin-error` as it lies in the guest's memory.
#[derive(ComponentType, Lift)]
#[component(record)]
pub struct LazyError {
    code: WasmStr,
    message: WasmStr,
}

/// A filter's `verdicts` as they lie in the guest's memory.
#[derive(ComponentType, Lift)]
#[component(record)]
pub struct LazyVerdicts {
    pass: WasmList<bool>,
    reasons: WasmList<(u32, WasmStr)>,
}

/// A volume driver's `nfs-location`.
#[derive(ComponentType, Lift)]
#[component(record)]
pub struct LazyNfs {
    host: WasmStr,
    path: WasmStr,
    format: volume_wit::DiskFormat,
}

/// A volume driver's `file-location`.
#[derive(ComponentType, Lift)]
#[component(record)]
pub struct LazyFile {
    path: WasmStr,
    format: volume_wit::DiskFormat,
}

/// A volume driver's `connection-info`.
#[derive(ComponentType, Lift)]
#[component(variant)]
pub enum LazyConnection {
    /// A block device.
    #[component(name = "block")]
    Block(WasmStr),
    /// A file on an NFS share.
    #[component(name = "nfs")]
    Nfs(LazyNfs),
    /// A local file.
    #[component(name = "file")]
    File(LazyFile),
}

/// A volume driver's `capacity-stats`.
#[derive(ComponentType, Lift)]
#[component(record)]
pub struct LazyCapacity {
    #[component(name = "backend-name")]
    backend_name: WasmStr,
    #[component(name = "total-gb")]
    total_gb: u64,
    #[component(name = "free-gb")]
    free_gb: u64,
    #[component(name = "provisioned-gb")]
    provisioned_gb: u64,
    #[component(name = "thin-provisioning")]
    thin_provisioning: bool,
    #[component(name = "max-over-subscription-ratio")]
    max_over_subscription_ratio: f64,
}

/// Reads one answer out of the guest's memory, charging what it keeps to the instance.
pub struct Reader<'a> {
    store: &'a mut Store<HostState>,
    /// Bytes the answer may still take.
    room: usize,
    /// Bytes the answer took so far.
    used: usize,
}

impl<'a> Reader<'a> {
    /// A reader for the answer just returned into `store`.
    pub fn new(store: &'a mut Store<HostState>) -> Self {
        let room = store.data().memory.room();
        Self {
            store,
            room,
            used: 0,
        }
    }

    /// Counts `bytes` more of host memory for the answer.
    fn charge(&mut self, bytes: usize) -> Result<(), String> {
        self.used = self.used.saturating_add(bytes);
        if self.used > self.room {
            let limit = self.store.data().memory.limit();
            return Err(format!(
                "keeping it needs at least {} bytes of host memory, more than the {} bytes \
                 its memory_limit_mb of {} MiB leaves beside its own memory",
                self.used,
                self.room,
                limit >> 20
            ));
        }
        Ok(())
    }

    /// The text of `s`, cut to `max` bytes.
    fn text_to(&mut self, s: &WasmStr, max: usize) -> Result<String, String> {
        let text = s
            .to_str(&*self.store)
            .map_err(|e| format!("a string is not valid UTF-8: {e}"))?;
        let kept = cap_to(&text, max);
        self.charge(kept.len() + ALLOC_OVERHEAD)?;
        Ok(kept)
    }

    /// The text of `s`, cut to [`MAX_TEXT_BYTES`].
    pub fn text(&mut self, s: &WasmStr) -> Result<String, String> {
        self.text_to(s, MAX_TEXT_BYTES)
    }

    /// The name or path `s`; refused beyond [`MAX_NAME_BYTES`].
    ///
    /// # Errors
    /// Why the answer is unusable.
    pub fn name(&mut self, what: &str, s: &WasmStr) -> Result<String, String> {
        let text = s
            .to_str(&*self.store)
            .map_err(|e| format!("the {what} is not valid UTF-8: {e}"))?;
        if text.len() > MAX_NAME_BYTES {
            return Err(format!(
                "the {what} is {} bytes long (the limit is {MAX_NAME_BYTES})",
                text.len()
            ));
        }
        let name = text.into_owned();
        self.charge(name.len() + ALLOC_OVERHEAD)?;
        Ok(name)
    }

    /// A plugin's error: its code and message, each cut to [`MAX_TEXT_BYTES`].
    ///
    /// # Errors
    /// Why the answer is unusable.
    pub fn error(&mut self, e: &LazyError) -> Result<(String, String), String> {
        Ok((self.text(&e.code)?, self.text(&e.message)?))
    }

    /// A filter's verdicts for `hosts` hosts: one `None` (pass) or `Some(reason)` (fail) per
    /// host. Reasons are cut to [`MAX_TEXT_BYTES`] each and [`MAX_REASONS_BYTES`] together
    /// (past that, a reason is only the note of what was cut).
    ///
    /// # Errors
    /// Why the answer is unusable: not one flag per host, more reasons than hosts, a reason
    /// for a host that passed or does not exist, or more than the memory budget.
    pub fn verdicts(
        &mut self,
        v: &LazyVerdicts,
        hosts: usize,
    ) -> Result<Vec<Option<String>>, String> {
        if v.pass.len() != hosts {
            return Err(format!("{} verdicts for {hosts} hosts", v.pass.len()));
        }
        if v.reasons.len() > hosts {
            return Err(format!("{} reasons for {hosts} hosts", v.reasons.len()));
        }
        self.charge(hosts * (size_of::<bool>() + size_of::<Option<String>>()))?;
        let pass = v
            .pass
            .iter(&mut *self.store)
            .map_err(|e| format!("unreadable verdicts: {e:#}"))?
            .collect::<wasmtime::Result<Vec<bool>>>()
            .map_err(|e| format!("unreadable verdicts: {e:#}"))?;
        let mut out: Vec<Option<String>> = vec![None; hosts];
        let mut left = MAX_REASONS_BYTES;
        for i in 0..v.reasons.len() {
            let (index, reason) = match v.reasons.get(&mut *self.store, i) {
                Some(Ok(item)) => item,
                Some(Err(e)) => return Err(format!("unreadable reason: {e:#}")),
                None => break,
            };
            let host = index as usize;
            if host >= hosts || pass[host] {
                return Err(format!("a reason for host {index}, which did not fail"));
            }
            let reason = self.text_to(&reason, MAX_TEXT_BYTES.min(left))?;
            left = left.saturating_sub(reason.len());
            out[host] = Some(reason);
        }
        for (i, pass) in pass.iter().enumerate() {
            if !pass && out[i].is_none() {
                out[i] = Some("no reason given".into());
            }
        }
        Ok(out)
    }

    /// A weigher's weights for `hosts` hosts.
    ///
    /// # Errors
    /// Why the answer is unusable: not one weight per host, or a weight that is not finite.
    pub fn weights(&mut self, w: &WasmList<f64>, hosts: usize) -> Result<Vec<f64>, String> {
        if w.len() != hosts {
            return Err(format!("{} weights for {hosts} hosts", w.len()));
        }
        self.charge(hosts * size_of::<f64>())?;
        let weights = w
            .iter(&mut *self.store)
            .map_err(|e| format!("unreadable weights: {e:#}"))?
            .collect::<wasmtime::Result<Vec<f64>>>()
            .map_err(|e| format!("unreadable weights: {e:#}"))?;
        if let Some(bad) = weights.iter().find(|w| !w.is_finite()) {
            return Err(format!("weight {bad} is not a finite number"));
        }
        Ok(weights)
    }

    /// A volume driver's connection info.
    ///
    /// # Errors
    /// Why the answer is unusable (a name or path too long, not UTF-8).
    pub fn connection(&mut self, c: &LazyConnection) -> Result<volume_wit::ConnectionInfo, String> {
        Ok(match c {
            LazyConnection::Block(path) => {
                volume_wit::ConnectionInfo::Block(self.name("block device path", path)?)
            }
            LazyConnection::Nfs(loc) => volume_wit::ConnectionInfo::Nfs(volume_wit::NfsLocation {
                host: self.name("NFS server", &loc.host)?,
                path: self.name("NFS path", &loc.path)?,
                format: loc.format,
            }),
            LazyConnection::File(loc) => {
                volume_wit::ConnectionInfo::File(volume_wit::FileLocation {
                    path: self.name("file path", &loc.path)?,
                    format: loc.format,
                })
            }
        })
    }

    /// A volume driver's capacity report.
    ///
    /// # Errors
    /// Why the answer is unusable (a backend name too long, not UTF-8).
    pub fn capacity(&mut self, c: &LazyCapacity) -> Result<volume_wit::CapacityStats, String> {
        Ok(volume_wit::CapacityStats {
            backend_name: self.name("backend name", &c.backend_name)?,
            total_gb: c.total_gb,
            free_gb: c.free_gb,
            provisioned_gb: c.provisioned_gb,
            thin_provisioning: c.thin_provisioning,
            max_over_subscription_ratio: c.max_over_subscription_ratio,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_cut_on_a_character_boundary_with_a_note() {
        assert_eq!(cap("short"), "short");
        let long = "x".repeat(5000);
        let cut = cap(&long);
        assert!(cut.starts_with(&"x".repeat(MAX_TEXT_BYTES)));
        assert!(cut.ends_with("… (3976 bytes cut)"), "{cut}");
        // A 2-byte character straddling the limit is left out whole.
        let text = format!("{}é{}", "a".repeat(MAX_TEXT_BYTES - 1), "b".repeat(10));
        let cut = cap(&text);
        assert!(cut.starts_with(&"a".repeat(MAX_TEXT_BYTES - 1)));
        assert!(cut.ends_with("… (12 bytes cut)"), "{cut}");
    }
}
