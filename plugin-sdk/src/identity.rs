//! Who the hosts of a call are — names, traits and aggregate metadata (WIT scheduler 1.1,
//! `hosts.identity`) — fetched from the agent the first time a plugin asks, once per call,
//! and checked against the batch.

use std::cell::{OnceCell, RefCell};

use crate::HostIdentity;

/// The identity of a call's hosts, fetched lazily: a filter or weigher that never asks for a
/// name, trait or metadata value never makes the agent send them.
pub struct Identities {
    hosts: usize,
    source: RefCell<Option<Source>>,
    cell: OnceCell<HostIdentity>,
}

/// Where an identity comes from.
enum Source {
    Agent,
    Given(HostIdentity),
    Made(Box<dyn FnOnce() -> HostIdentity>),
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities")
            .field("hosts", &self.hosts)
            .field("loaded", &self.cell.get())
            .finish_non_exhaustive()
    }
}

impl Identities {
    /// The identity of the `hosts` hosts of the call in progress, asked of the agent on first
    /// use (off wasm: of the mock host, see [`testing`](crate::testing)).
    pub fn from_agent(hosts: usize) -> Self {
        Self::with_source(hosts, Source::Agent)
    }

    /// A given identity (e.g. [`testing::identity`](crate::testing::identity)), checked on
    /// first use like the agent's.
    pub fn given(identity: HostIdentity) -> Self {
        Self::with_source(identity.names.len(), Source::Given(identity))
    }

    /// The identity of `hosts` hosts that `make` builds on first use (as the agent builds its
    /// own only when a plugin asks), checked like the agent's.
    pub fn from_fn(hosts: usize, make: impl FnOnce() -> HostIdentity + 'static) -> Self {
        Self::with_source(hosts, Source::Made(Box::new(make)))
    }

    fn with_source(hosts: usize, source: Source) -> Self {
        Self {
            hosts,
            source: RefCell::new(Some(source)),
            cell: OnceCell::new(),
        }
    }

    /// The checked identity.
    ///
    /// # Panics
    ///
    /// When the identity does not fit the batch (a host agent that breaks the WIT's rules):
    /// the plugin traps and the agent reports the call as failed, naming it.
    pub(crate) fn get(&self) -> &HostIdentity {
        self.cell.get_or_init(|| {
            let identity = match self.source.borrow_mut().take() {
                Some(Source::Given(identity)) => identity,
                Some(Source::Made(make)) => make(),
                Some(Source::Agent) | None => fetch(),
            };
            if let Err(e) = check(&identity, self.hosts) {
                panic!("the host sent an identity that does not fit the batch: {e}");
            }
            identity
        })
    }

    /// Whether it was fetched (or given and used) already.
    pub fn is_loaded(&self) -> bool {
        self.cell.get().is_some()
    }
}

#[cfg(target_arch = "wasm32")]
fn fetch() -> HostIdentity {
    crate::bindings::filter::hyperlet::scheduler::hosts::identity()
}

#[cfg(not(target_arch = "wasm32"))]
fn fetch() -> HostIdentity {
    crate::testing::current_identity()
}

/// Checks an identity's columns: one name per host, `*-start` columns of hosts + 1
/// non-decreasing offsets ending at their list's length, every string index in range.
///
/// # Errors
///
/// What is wrong, first found first.
pub fn check(id: &HostIdentity, hosts: usize) -> Result<(), String> {
    if id.names.len() != hosts {
        return Err(format!("{} names for {hosts} hosts", id.names.len()));
    }
    let starts = |what: &str, starts: &[u32], len: usize| -> Result<(), String> {
        if starts.len() != hosts + 1
            || starts.first() != Some(&0)
            || starts.last().map(|&l| l as usize) != Some(len)
            || starts.windows(2).any(|w| w[0] > w[1])
        {
            return Err(format!(
                "{what} is not {} offsets from 0 to {len}",
                hosts + 1
            ));
        }
        Ok(())
    };
    starts("trait-start", &id.trait_start, id.trait_idx.len())?;
    if id.metadata_key_idx.len() != id.metadata_value_idx.len() {
        return Err("metadata keys and values differ in number".into());
    }
    starts(
        "metadata-start",
        &id.metadata_start,
        id.metadata_key_idx.len(),
    )?;
    let n = id.strings.len();
    if let Some(idx) = id
        .trait_idx
        .iter()
        .chain(&id.metadata_key_idx)
        .chain(&id.metadata_value_idx)
        .find(|&&i| i as usize >= n)
    {
        return Err(format!("string index {idx}, but there are {n} strings"));
    }
    Ok(())
}
