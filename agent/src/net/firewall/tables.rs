//! nftables tables as named objects — chains, sets, maps and counters — so that two versions
//! of a table can be compared and the older turned into the newer with the fewest commands.
//!
//! [`full`] writes a script that replaces the tables outright; [`diff`] one that adds,
//! flushes and deletes only what changed (a rule added to a group flushes and refills that
//! group's chain; a port joining a group adds one set element). Either is one `nft -f`
//! transaction: the kernel applies all of it or none of it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

/// One chain: its hook line (base chains) and its rules, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    /// `type filter hook … priority …; policy …;` for a base chain.
    pub hook: Option<String>,
    /// Rule texts.
    pub rules: Vec<String>,
}

/// One named set (`value` empty in every element) or map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Set {
    /// `set` or `map`.
    pub kind: &'static str,
    /// Its declaration body, e.g. `type ifname : verdict;`.
    pub spec: String,
    /// Elements: key → value (empty for a set).
    pub elements: BTreeMap<String, String>,
}

impl Set {
    /// A set of `type`.
    pub fn of(spec: &str) -> Self {
        Self {
            kind: "set",
            spec: spec.to_string(),
            elements: BTreeMap::new(),
        }
    }

    /// A map of `type`.
    pub fn map(spec: &str) -> Self {
        Self {
            kind: "map",
            spec: spec.to_string(),
            elements: BTreeMap::new(),
        }
    }
}

/// One table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    /// `bridge`, `inet`, …
    pub family: &'static str,
    /// Its name.
    pub name: String,
    /// Chains by name.
    pub chains: BTreeMap<String, Chain>,
    /// Sets and maps by name.
    pub sets: BTreeMap<String, Set>,
    /// Named counters.
    pub counters: BTreeSet<String>,
}

impl Table {
    /// An empty table.
    pub fn new(family: &'static str, name: &str) -> Self {
        Self {
            family,
            name: name.to_string(),
            ..Self::default()
        }
    }

    fn at(&self) -> String {
        format!("{} {}", self.family, self.name)
    }
}

fn element(key: &str, value: &str) -> String {
    if value.is_empty() {
        key.to_string()
    } else {
        format!("{key} : {value}")
    }
}

fn add_chain(out: &mut String, at: &str, name: &str, chain: &Chain) {
    match &chain.hook {
        Some(hook) => writeln!(out, "add chain {at} {name} {{ {hook} }}"),
        None => writeln!(out, "add chain {at} {name}"),
    }
    .expect("writing to a String");
}

fn add_rules(out: &mut String, at: &str, name: &str, chain: &Chain) {
    for rule in &chain.rules {
        let _ = writeln!(out, "add rule {at} {name} {rule}");
    }
}

fn add_elements<'a>(
    out: &mut String,
    at: &str,
    set: &str,
    items: impl Iterator<Item = (&'a String, &'a String)>,
) {
    let items: Vec<String> = items.map(|(k, v)| element(k, v)).collect();
    if !items.is_empty() {
        let _ = writeln!(out, "add element {at} {set} {{ {} }}", items.join(", "));
    }
}

/// Removes `tables` (if they exist) and creates them as they are, in one script.
pub fn full(tables: &[&Table]) -> String {
    let mut out = String::new();
    for t in tables {
        let at = t.at();
        // `add table` then `delete table`: works whether or not the table exists yet.
        let _ = writeln!(out, "add table {at}\ndelete table {at}\nadd table {at}");
        for name in &t.counters {
            let _ = writeln!(out, "add counter {at} {name}");
        }
        for (name, chain) in &t.chains {
            add_chain(&mut out, &at, name, chain);
        }
        for (name, set) in &t.sets {
            let _ = writeln!(out, "add {} {at} {name} {{ {} }}", set.kind, set.spec);
            add_elements(&mut out, &at, name, set.elements.iter());
        }
        for (name, chain) in &t.chains {
            add_rules(&mut out, &at, name, chain);
        }
    }
    out
}

/// Removes `tables` if they exist.
pub fn remove(tables: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (family, name) in tables {
        let _ = writeln!(
            out,
            "add table {family} {name}\ndelete table {family} {name}"
        );
    }
    out
}

/// The commands that turn `old` into `new` (the same table), or `None` when only a [`full`]
/// replacement can (a base chain or a set's type changed). Empty when nothing changed.
pub fn diff(old: &Table, new: &Table) -> Option<String> {
    if old.family != new.family || old.name != new.name {
        return None;
    }
    for (name, chain) in &new.chains {
        if old.chains.get(name).is_some_and(|c| c.hook != chain.hook) {
            return None;
        }
    }
    for (name, set) in &new.sets {
        if old
            .sets
            .get(name)
            .is_some_and(|s| s.kind != set.kind || s.spec != set.spec)
        {
            return None;
        }
    }
    let at = new.at();
    let mut out = String::new();
    // 1. New objects, empty, so that anything below may refer to them.
    for name in new.counters.difference(&old.counters) {
        let _ = writeln!(out, "add counter {at} {name}");
    }
    for (name, chain) in &new.chains {
        if !old.chains.contains_key(name) {
            add_chain(&mut out, &at, name, chain);
        }
    }
    for (name, set) in &new.sets {
        if !old.sets.contains_key(name) {
            let _ = writeln!(out, "add {} {at} {name} {{ {} }}", set.kind, set.spec);
        }
    }
    // 2. Elements that went or changed value.
    for (name, before) in &old.sets {
        let after = new.sets.get(name);
        let gone: Vec<&String> = before
            .elements
            .iter()
            .filter(|(k, v)| after.is_some_and(|a| a.elements.get(*k) != Some(*v)))
            .map(|(k, _)| k)
            .collect();
        if !gone.is_empty() {
            let keys: Vec<&str> = gone.iter().map(|k| k.as_str()).collect();
            let _ = writeln!(out, "delete element {at} {name} {{ {} }}", keys.join(", "));
        }
    }
    // 3. Chains whose rules changed or that go: emptied (their references go with them) —
    //    unless rules were only appended (a rule added to a group), which need no flush.
    let appended = |name: &String| -> Option<&[String]> {
        let (before, after) = (old.chains.get(name)?, new.chains.get(name)?);
        after
            .rules
            .strip_prefix(before.rules.as_slice())
            .filter(|rest| !rest.is_empty())
    };
    for (name, chain) in &old.chains {
        if new.chains.get(name).is_none_or(|c| c != chain)
            && !chain.rules.is_empty()
            && appended(name).is_none()
        {
            let _ = writeln!(out, "flush chain {at} {name}");
        }
    }
    // 4. Elements that came or changed value, then the rules of new and changed chains.
    for (name, set) in &new.sets {
        let before = old.sets.get(name);
        add_elements(
            &mut out,
            &at,
            name,
            set.elements
                .iter()
                .filter(|(k, v)| before.is_none_or(|b| b.elements.get(*k) != Some(*v))),
        );
    }
    for (name, chain) in &new.chains {
        if let Some(rest) = appended(name) {
            let tail = Chain {
                hook: None,
                rules: rest.to_vec(),
            };
            add_rules(&mut out, &at, name, &tail);
        } else if old.chains.get(name) != Some(chain) {
            add_rules(&mut out, &at, name, chain);
        }
    }
    // 5. Objects that went, now that nothing refers to them.
    for name in old.sets.keys() {
        if !new.sets.contains_key(name) {
            let _ = writeln!(out, "delete {} {at} {name}", old.sets[name].kind);
        }
    }
    for name in old.chains.keys() {
        if !new.chains.contains_key(name) {
            let _ = writeln!(out, "delete chain {at} {name}");
        }
    }
    for name in old.counters.difference(&new.counters) {
        let _ = writeln!(out, "delete counter {at} {name}");
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Table {
        let mut t = Table::new("inet", "t");
        t.chains.insert(
            "base".into(),
            Chain {
                hook: Some("type filter hook forward priority 0; policy accept;".into()),
                rules: vec!["iifname vmap @ports".into()],
            },
        );
        t.chains.insert(
            "p_1".into(),
            Chain {
                hook: None,
                rules: vec!["ip saddr @m_1 accept".into()],
            },
        );
        let mut ports = Set::map("type ifname : verdict;");
        ports.elements.insert("\"tapa\"".into(), "jump p_1".into());
        t.sets.insert("ports".into(), ports);
        let mut members = Set::of("type ipv4_addr;");
        members.elements.insert("10.0.0.3".into(), String::new());
        t.sets.insert("m_1".into(), members);
        t.counters.insert("policy_1".into());
        t
    }

    #[test]
    fn an_unchanged_table_needs_no_command() {
        assert_eq!(diff(&table(), &table()).as_deref(), Some(""));
    }

    #[test]
    fn a_member_joining_adds_one_element() {
        let mut new = table();
        new.sets
            .get_mut("m_1")
            .unwrap()
            .elements
            .insert("10.0.0.4".into(), String::new());
        assert_eq!(
            diff(&table(), &new).unwrap(),
            "add element inet t m_1 { 10.0.0.4 }\n"
        );
    }

    #[test]
    fn an_appended_rule_is_added_alone() {
        let mut new = table();
        new.chains
            .get_mut("p_1")
            .unwrap()
            .rules
            .push("tcp dport 22 accept".into());
        assert_eq!(
            diff(&table(), &new).unwrap(),
            "add rule inet t p_1 tcp dport 22 accept\n"
        );
    }

    #[test]
    fn a_changed_chain_is_flushed_and_refilled() {
        let mut new = table();
        new.chains.get_mut("p_1").unwrap().rules = vec!["tcp dport 22 accept".into()];
        assert_eq!(
            diff(&table(), &new).unwrap(),
            "flush chain inet t p_1\nadd rule inet t p_1 tcp dport 22 accept\n"
        );
    }

    #[test]
    fn a_port_leaving_drops_its_element_before_its_chain() {
        let mut new = table();
        new.chains.remove("p_1");
        new.sets.get_mut("ports").unwrap().elements.clear();
        new.counters.clear();
        assert_eq!(
            diff(&table(), &new).unwrap(),
            "delete element inet t ports { \"tapa\" }\nflush chain inet t p_1\n\
             delete chain inet t p_1\ndelete counter inet t policy_1\n"
        );
    }

    #[test]
    fn a_new_base_chain_hook_needs_a_full_replacement() {
        let mut new = table();
        new.chains.get_mut("base").unwrap().hook =
            Some("type filter hook input priority 0;".into());
        assert_eq!(diff(&table(), &new), None);
    }

    #[test]
    fn full_declares_before_it_refers() {
        let text = full(&[&table()]);
        let pos = |s: &str| text.find(s).unwrap_or_else(|| panic!("{s} in {text}"));
        assert!(pos("add chain inet t p_1") < pos("add element inet t ports"));
        assert!(pos("add set inet t m_1") < pos("add rule inet t p_1"));
        assert!(text.starts_with("add table inet t\ndelete table inet t\nadd table inet t\n"));
    }
}
