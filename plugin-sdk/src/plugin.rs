//! The plugin traits and the batching glue the export macros call.

use std::cell::RefCell;

use crate::host::Host;
use crate::{codes, HostBatch, Hosts, PluginError, Properties, RequestSpec, Settings, Verdict};

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

    /// The verdicts for a whole batch, one per host in order. The default calls
    /// [`Filter::filter`] for each host; override it to share work across hosts or to fail
    /// the whole call.
    ///
    /// # Errors
    ///
    /// A [`PluginError`] fails the whole call (every host).
    fn filter_all(
        &self,
        spec: &RequestSpec,
        hosts: &Hosts<'_>,
    ) -> Result<Vec<Verdict>, PluginError> {
        Ok(hosts.iter().map(|host| self.filter(spec, &host)).collect())
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
) -> Result<Vec<Verdict>, PluginError> {
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
) -> Result<Vec<Verdict>, PluginError> {
    let hosts = Hosts::new(batch)?;
    let verdicts = filter.filter_all(spec, &hosts)?;
    check_len("verdicts", verdicts.len(), hosts.len())?;
    Ok(verdicts)
}

/// Checks the batch, runs the weigher over it and checks the answer.
pub(crate) fn run_weigher_batch<W: Weigher>(
    weigher: &W,
    spec: &RequestSpec,
    batch: &HostBatch,
) -> Result<Vec<f64>, PluginError> {
    let hosts = Hosts::new(batch)?;
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
