//! What a plugin answers, checked and cut: the one place where text and lists coming from a
//! plugin enter the agent.
//!
//! Two bounds apply, in this order:
//!
//! 1. **while wasmtime copies the answer out of the guest** — every copy from guest to host
//!    (an export's result, an import's arguments) is limited by the store's *hostcall fuel*,
//!    one unit per byte of the lifted strings and lists (`memory.rs` sets it to the instance's
//!    answer budget, a share of `memory_limit_mb`). A list of millions of small items or a
//!    100 MiB string fails with [`PluginError::BadAnswer`](super::PluginError::BadAnswer) before
//!    the host allocates more than that budget. (The answer cannot be read lazily in place:
//!    wasmtime runs the guest's post-return, which frees it, as soon as it is lifted.)
//! 2. **what the agent keeps** — text meant for people (error codes and messages, filter
//!    reasons, traps, log lines, captured stdout/stderr) is cut to [`MAX_TEXT_BYTES`] with a
//!    note of how much was cut ([`cap`]); a filter's reasons together keep at most
//!    [`MAX_REASONS_BYTES`]; names and paths (a bridge, a block device, an NFS server) are
//!    refused beyond [`MAX_NAME_BYTES`], since cutting would change their meaning; lists must
//!    have exactly the length the host asked for.

use super::bindings::volume::hyperlet::volume::types as volume_wit;
use super::bindings::{WitPluginError, WitVerdicts};

/// Most bytes kept of one text from a plugin (a message, a reason, a trap, a log line).
pub const MAX_TEXT_BYTES: usize = 1024;
/// Most bytes of all the reasons of one filter answer.
pub const MAX_REASONS_BYTES: usize = 1024 * 1024;
/// Longest name or path an answer may hold.
pub const MAX_NAME_BYTES: usize = 4096;

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

/// A plugin's error as the agent keeps it: its code and message, each cut.
pub fn error(e: &WitPluginError) -> (String, String) {
    (cap(&e.code), cap(&e.message))
}

/// A name or path from an answer; refused beyond [`MAX_NAME_BYTES`].
///
/// # Errors
/// Why the answer is unusable.
pub fn name(what: &str, text: String) -> Result<String, String> {
    if text.len() > MAX_NAME_BYTES {
        return Err(format!(
            "the {what} is {} bytes long (the limit is {MAX_NAME_BYTES})",
            text.len()
        ));
    }
    Ok(text)
}

/// A filter's verdicts for `hosts` hosts: one `None` (pass) or `Some(reason)` (fail) per host.
/// Reasons are cut to [`MAX_TEXT_BYTES`] each and [`MAX_REASONS_BYTES`] together (past that, a
/// reason is only the note of what was cut).
///
/// # Errors
/// Why the answer is unusable: not one flag per host, more reasons than hosts, or a reason for
/// a host that passed or does not exist.
pub fn verdicts(v: WitVerdicts, hosts: usize) -> Result<Vec<Option<String>>, String> {
    if v.pass.len() != hosts {
        return Err(format!("{} verdicts for {hosts} hosts", v.pass.len()));
    }
    if v.reasons.len() > hosts {
        return Err(format!("{} reasons for {hosts} hosts", v.reasons.len()));
    }
    let mut out: Vec<Option<String>> = vec![None; hosts];
    let mut left = MAX_REASONS_BYTES;
    for (index, reason) in v.reasons {
        let host = index as usize;
        if host >= hosts || v.pass[host] {
            return Err(format!("a reason for host {index}, which did not fail"));
        }
        let reason = cap_to(&reason, MAX_TEXT_BYTES.min(left));
        left = left.saturating_sub(reason.len());
        out[host] = Some(reason);
    }
    for (i, pass) in v.pass.iter().enumerate() {
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
pub fn weights(w: Vec<f64>, hosts: usize) -> Result<Vec<f64>, String> {
    if w.len() != hosts {
        return Err(format!("{} weights for {hosts} hosts", w.len()));
    }
    if let Some(bad) = w.iter().find(|w| !w.is_finite()) {
        return Err(format!("weight {bad} is not a finite number"));
    }
    Ok(w)
}

/// A volume driver's connection info, its names and paths within [`MAX_NAME_BYTES`].
///
/// # Errors
/// Why the answer is unusable.
pub fn connection(c: volume_wit::ConnectionInfo) -> Result<volume_wit::ConnectionInfo, String> {
    Ok(match c {
        volume_wit::ConnectionInfo::Block(path) => {
            volume_wit::ConnectionInfo::Block(name("block device path", path)?)
        }
        volume_wit::ConnectionInfo::Nfs(loc) => {
            volume_wit::ConnectionInfo::Nfs(volume_wit::NfsLocation {
                host: name("NFS server", loc.host)?,
                path: name("NFS path", loc.path)?,
                format: loc.format,
            })
        }
        volume_wit::ConnectionInfo::File(loc) => {
            volume_wit::ConnectionInfo::File(volume_wit::FileLocation {
                path: name("file path", loc.path)?,
                format: loc.format,
            })
        }
    })
}

/// A volume driver's capacity report, its backend name within [`MAX_NAME_BYTES`].
///
/// # Errors
/// Why the answer is unusable.
pub fn capacity(c: volume_wit::CapacityStats) -> Result<volume_wit::CapacityStats, String> {
    Ok(volume_wit::CapacityStats {
        backend_name: name("backend name", c.backend_name)?,
        ..c
    })
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

    #[test]
    fn verdicts_are_checked_and_reasons_cut() {
        let v = |pass: Vec<bool>, reasons: Vec<(u32, String)>| WitVerdicts { pass, reasons };
        assert_eq!(
            verdicts(v(vec![true, false], vec![]), 2).unwrap(),
            vec![None, Some("no reason given".into())]
        );
        assert!(verdicts(v(vec![true; 3], vec![]), 2)
            .unwrap_err()
            .contains("3 verdicts for 2 hosts"));
        assert!(
            verdicts(v(vec![false], vec![(0, "a".into()), (0, "b".into())]), 1)
                .unwrap_err()
                .contains("2 reasons for 1 hosts")
        );
        assert!(verdicts(v(vec![true], vec![(0, "a".into())]), 1).is_err());
        assert!(verdicts(v(vec![false], vec![(7, "a".into())]), 1).is_err());
        // Each reason is cut, and all of them together stay within the total.
        let hosts = 2 * MAX_REASONS_BYTES / MAX_TEXT_BYTES;
        let reasons = (0..hosts as u32).map(|i| (i, "r".repeat(5000))).collect();
        let out = verdicts(v(vec![false; hosts], reasons), hosts).unwrap();
        let total: usize = out.iter().map(|r| r.as_ref().unwrap().len()).sum();
        assert!(total < MAX_REASONS_BYTES + hosts * 32, "{total}");
        assert!(out[0].as_ref().unwrap().ends_with("(3976 bytes cut)"));
        assert_eq!(out[hosts - 1].as_deref(), Some("… (5000 bytes cut)"));
    }

    #[test]
    fn names_are_refused_not_cut() {
        assert_eq!(name("bridge name", "brq1".into()).unwrap(), "brq1");
        let e = name("bridge name", "b".repeat(MAX_NAME_BYTES + 1)).unwrap_err();
        assert!(e.contains("4097 bytes"), "{e}");
        assert!(weights(vec![1.0, f64::NAN], 2).is_err());
        assert!(weights(vec![1.0], 2).is_err());
    }
}
