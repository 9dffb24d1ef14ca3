//! The plugin traits and the batching glue the export macros call.

use std::cell::RefCell;

use crate::host::Host;
use crate::{
    codes, HostBatch, Hosts, Identities, PluginError, Properties, RequestSpec, Settings, Verdict,
    Verdicts,
};

/// A scheduler filter: decides, host by host, whether a host can take a request.
///
/// Export it with [`export_filter!`](crate::export_filter).
pub trait Filter: Sized + 'static {
    /// Builds the filter from its settings; called by `configure`, once after loading.
    ///
    /// # Errors
    ///
    /// Return a [`PluginError`] (usually `bad-setting`, which the [`Settings`] getters
    /// produce) to refuse the settings; the agent then does not use the plugin.
    fn new(settings: &Settings) -> Result<Self, PluginError>;

    /// The verdict for one host. A failure's reason should say what was needed and what the
    /// host has, e.g. `needs 2048 MiB RAM, 1024 usable (8192 × 1.0 − 7168 used)`.
    fn filter(&self, spec: &RequestSpec, host: &Host<'_>) -> Verdict;

    /// The verdicts for a whole batch, one per host in order, as the WIT's columnar
    /// [`Verdicts`] (a pass flag per host, a reason per failed host). The default calls
    /// [`Filter::filter`] for each host and [`Verdicts::push`]es the answer: a passing host
    /// costs one flag, no allocation. Override it to share work across hosts or to fail the
    /// whole call; build the answer with [`Verdicts::push`] / `push_pass` / `push_fail`, or
    /// `collect()` an iterator of [`Verdict`]s.
    ///
    /// # Errors
    ///
    /// A [`PluginError`] fails the whole call (every host).
    fn filter_all(&self, spec: &RequestSpec, hosts: &Hosts<'_>) -> Result<Verdicts, PluginError> {
        let mut verdicts = Verdicts::with_capacity(hosts.len());
        for host in hosts.iter() {
            verdicts.push(self.filter(spec, &host));
        }
        Ok(verdicts)
    }
}

/// A scheduler weigher: gives each host a raw weight. The agent normalises the weights of a
/// batch to 0..1 and applies the configured `multiplier`, so only the order and the relative
/// distances matter: higher is better.
///
/// Export it with [`export_weigher!`](crate::export_weigher).
pub trait Weigher: Sized + 'static {
    /// Builds the weigher from its settings; called by `configure`, once after loading.
    ///
    /// # Errors
    ///
    /// Return a [`PluginError`] (usually `bad-setting`) to refuse the settings.
    fn new(settings: &Settings) -> Result<Self, PluginError>;

    /// The raw weight of one host; must be finite.
    fn weigh(&self, spec: &RequestSpec, host: &Host<'_>) -> f64;

    /// The weights for a whole batch, one per host in order. The default calls
    /// [`Weigher::weigh`] for each host.
    ///
    /// # Errors
    ///
    /// A [`PluginError`] fails the whole call.
    fn weigh_all(&self, spec: &RequestSpec, hosts: &Hosts<'_>) -> Result<Vec<f64>, PluginError> {
        Ok(hosts.iter().map(|host| self.weigh(spec, &host)).collect())
    }
}

/// `configure` of an exported filter: replaces the instance in `slot`, or empties it when
/// the settings are refused.
///
/// # Errors
///
/// Whatever [`Filter::new`] returns.
pub fn configure<F: Filter>(
    slot: &RefCell<Option<F>>,
    settings: Properties,
) -> Result<(), PluginError> {
    *slot.borrow_mut() = None;
    let instance = F::new(&Settings::new(settings))?;
    *slot.borrow_mut() = Some(instance);
    Ok(())
}

/// `configure` of an exported weigher; see [`configure`].
///
/// # Errors
///
/// Whatever [`Weigher::new`] returns.
pub fn configure_weigher<W: Weigher>(
    slot: &RefCell<Option<W>>,
    settings: Properties,
) -> Result<(), PluginError> {
    *slot.borrow_mut() = None;
    let instance = W::new(&Settings::new(settings))?;
    *slot.borrow_mut() = Some(instance);
    Ok(())
}

/// `filter-hosts` of an exported filter.
///
/// # Errors
///
/// `not-configured`, `bad-batch`, `bad-answer`, or the filter's own error.
pub fn filter_hosts<F: Filter>(
    slot: &RefCell<Option<F>>,
    spec: &RequestSpec,
    batch: &HostBatch,
) -> Result<Verdicts, PluginError> {
    let slot = slot.borrow();
    let filter = slot.as_ref().ok_or_else(not_configured)?;
    run_filter_batch(filter, spec, batch)
}

/// `weigh-hosts` of an exported weigher.
///
/// # Errors
///
/// `not-configured`, `bad-batch`, `bad-answer`, or the weigher's own error.
pub fn weigh_hosts<W: Weigher>(
    slot: &RefCell<Option<W>>,
    spec: &RequestSpec,
    batch: &HostBatch,
) -> Result<Vec<f64>, PluginError> {
    let slot = slot.borrow();
    let weigher = slot.as_ref().ok_or_else(not_configured)?;
    run_weigher_batch(weigher, spec, batch)
}

/// Checks the batch, runs the filter over it and checks the answer.
pub(crate) fn run_filter_batch<F: Filter>(
    filter: &F,
    spec: &RequestSpec,
    batch: &HostBatch,
) -> Result<Verdicts, PluginError> {
    let identity = Identities::from_agent(batch.enabled.len());
    let hosts = Hosts::with_identity(batch, &identity)?;
    let verdicts = filter.filter_all(spec, &hosts)?;
    check_verdicts(&verdicts, hosts.len())?;
    Ok(verdicts)
}

/// One pass flag per host, and exactly one reason for each failed host (none for a passing
/// one), as the WIT asks.
fn check_verdicts(verdicts: &Verdicts, hosts: usize) -> Result<(), PluginError> {
    check_len("verdicts", verdicts.pass.len(), hosts)?;
    let bad = |message: String| Err(PluginError::new(codes::BAD_ANSWER, message));
    let mut previous: Option<u32> = None;
    let mut sorted = true;
    for &(index, _) in &verdicts.reasons {
        match verdicts.pass.get(index as usize) {
            None => {
                return bad(format!(
                    "Reason for host {index}, but there are {hosts} hosts"
                ))
            }
            Some(true) => return bad(format!("Reason for host {index}, which passed")),
            Some(false) => {}
        }
        sorted &= previous.is_none_or(|p| p < index);
        previous = Some(index);
    }
    // Every reason names a failed host; now each failed host must have exactly one.
    let failed = verdicts.pass.iter().filter(|&&pass| !pass).count();
    if sorted && failed == verdicts.reasons.len() {
        return Ok(());
    }
    let mut reasons = vec![0_u8; hosts];
    for &(index, _) in &verdicts.reasons {
        let seen = &mut reasons[index as usize];
        if *seen > 0 {
            return bad(format!("More than one reason for host {index}"));
        }
        *seen = 1;
    }
    match verdicts
        .pass
        .iter()
        .zip(&reasons)
        .position(|(&pass, &seen)| !pass && seen == 0)
    {
        Some(i) => bad(format!("Host {i} failed without a reason")),
        None => Ok(()),
    }
}

/// Checks the batch, runs the weigher over it and checks the answer.
pub(crate) fn run_weigher_batch<W: Weigher>(
    weigher: &W,
    spec: &RequestSpec,
    batch: &HostBatch,
) -> Result<Vec<f64>, PluginError> {
    let identity = Identities::from_agent(batch.enabled.len());
    let hosts = Hosts::with_identity(batch, &identity)?;
    let weights = weigher.weigh_all(spec, &hosts)?;
    check_len("weights", weights.len(), hosts.len())?;
    if let Some((i, w)) = weights.iter().enumerate().find(|(_, w)| !w.is_finite()) {
        return Err(PluginError::new(
            codes::BAD_ANSWER,
            format!("Weight of host {i} is {w}, not a finite number"),
        ));
    }
    Ok(weights)
}

fn check_len(what: &str, got: usize, hosts: usize) -> Result<(), PluginError> {
    if got == hosts {
        Ok(())
    } else {
        Err(PluginError::new(
            codes::BAD_ANSWER,
            format!("The plugin returned {got} {what} for {hosts} hosts"),
        ))
    }
}

fn not_configured() -> PluginError {
    PluginError::new(
        codes::NOT_CONFIGURED,
        "Called before a successful configure",
    )
}
