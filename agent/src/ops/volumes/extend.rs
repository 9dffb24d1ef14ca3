//! Extend (`{"extend": {"new_size_gb": N}}`): answered 202 `extending`, then journaled as
//! `volume.extend` in the background: `record` → `driver_extend` → the new size, `available`.
//!
//! A failure puts the volume back to `available` at its old size with the error. After a
//! crash the extend is resumed: a `driver_extend` that finished is recorded, one that only
//! started is run again (drivers grow to a size, so a second run is harmless); when that
//! fails the volume is `available` at its recorded size with the error.

use super::{check_capacity, driver, get, set_status, volume_lock, volume_ref, MAX_SIZE_GB};
use crate::ops::{background, OpError, Services};
use crate::state::{
    OperationHandler, OperationRecord, RestartPolicy, StepRecord, StepStatus, UndoFuture, Volume,
};
use crate::volume::VolumeRef;
use serde_json::json;

/// Journal kind of an extend.
pub const EXTEND_KIND: &str = "volume.extend";

/// Grows an available volume: answers with it `extending`; the driver grows it in the
/// background.
///
/// # Errors
/// 400 unless N is larger than the size (and at most the maximum); 409 unless the volume is
/// available or when the backend cannot hold the growth. Nothing changes then.
pub async fn extend(services: &Services, id: &str, new_size_gb: i64) -> Result<Volume, OpError> {
    let guard = volume_lock(services, id).lock_owned().await;
    let volume = get(services, id).await?;
    if new_size_gb <= volume.size_gb as i64 || new_size_gb as u64 > MAX_SIZE_GB {
        return Err(OpError::InvalidInput(format!(
            "new_size_gb must be larger than the current {} GiB and at most {MAX_SIZE_GB}, not {new_size_gb}",
            volume.size_gb
        )));
    }
    if volume.status != "available" {
        return Err(OpError::Conflict(format!(
            "volume {id} is {}; only available volumes can be extended",
            volume.status
        )));
    }
    let new_size = new_size_gb as u64;
    let stats = driver::call(services, &volume.backend, move |p| async move {
        p.capacity_stats().await
    })
    .await?;
    check_capacity(&volume.backend, &stats, new_size - volume.size_gb)?;
    let services = services.clone();
    background::run(move |answer| async move {
        let _guard = guard;
        let id = volume.id.clone();
        let input = json!({
            "backend": volume.backend, "size_gb": volume.size_gb,
            "new_size_gb": new_size, "status": volume.status,
        });
        let Some(mut op) =
            background::begin_recorded(&services, EXTEND_KIND, &id, input, answer, || async {
                set_status(&services, &id, "extending", None)
                    .await?
                    .ok_or_else(|| OpError::NotFound {
                        kind: "volume",
                        id: id.clone(),
                    })
            })
            .await
        else {
            return;
        };
        let result = async {
            let v = volume_ref(&volume);
            op.step("driver_extend", json!({}), || {
                driver::call(&services, &volume.backend, move |p| async move {
                    p.volume_extend(&v, new_size).await
                })
            })
            .await?;
            grown(&services, &id, new_size, None).await
        }
        .await;
        background::finish(op, result).await;
    })
    .await
}

/// Records the volume's new size, `available`.
async fn grown(
    services: &Services,
    id: &str,
    size_gb: u64,
    error: Option<String>,
) -> Result<(), OpError> {
    if let Some(mut v) = services.store().get_volume(id).await? {
        v.size_gb = size_gb;
        services.store().put_volume(v).await?;
    }
    set_status(services, id, "available", error).await?;
    Ok(())
}

/// Settles extends: back to the previous status on failure, resumed after a restart.
pub(crate) struct ExtendHandler {
    /// The agent's services.
    pub services: Services,
}

impl OperationHandler for ExtendHandler {
    fn kind(&self) -> &'static str {
        EXTEND_KIND
    }

    fn undo<'a>(&'a self, op: &'a OperationRecord, step: &'a StepRecord) -> UndoFuture<'a> {
        Box::pin(async move {
            if step.name != "record" {
                return Ok(()); // a volume is never shrunk back
            }
            let status = op.input["status"].as_str().unwrap_or("available");
            set_status(&self.services, &op.resource_id, status, op.error.clone())
                .await
                .map(drop)
                .map_err(|e| crate::api::error::chain(&e))
        })
    }

    fn on_restart(&self, _op: &OperationRecord) -> RestartPolicy {
        RestartPolicy::Resume
    }

    fn resume<'a>(&'a self, op: &'a OperationRecord) -> UndoFuture<'a> {
        Box::pin(async move {
            let services = &self.services;
            let id = op.resource_id.as_str();
            let old = op.input["size_gb"].as_u64().unwrap_or(0);
            let new = op.input["new_size_gb"].as_u64().unwrap_or(old);
            let backend = op.input["backend"].as_str().unwrap_or_default().to_string();
            let step = op.steps.iter().find(|s| s.name == "driver_extend");
            let outcome = match step.map(|s| s.status) {
                Some(StepStatus::Done) => grown(services, id, new, None).await,
                Some(_) => {
                    let v = VolumeRef::new(id, old);
                    match driver::call(services, &backend, move |p| async move {
                        p.volume_extend(&v, new).await
                    })
                    .await
                    {
                        Ok(()) => grown(services, id, new, None).await,
                        Err(e) => {
                            let error = format!(
                                "the extend was interrupted by an agent restart and could not be finished: {}",
                                crate::api::error::chain(&e)
                            );
                            grown(services, id, old, Some(error)).await
                        }
                    }
                }
                None => {
                    let error = "the extend was interrupted by an agent restart".to_string();
                    grown(services, id, old, Some(error)).await
                }
            };
            outcome.map_err(|e| crate::api::error::chain(&e))
        })
    }
}
