//! Volumes left mid-way by a crash without a journal record, put right at startup (after the
//! journal's recovery, which has settled every journaled create, attach, detach, extend and
//! delete). A volume whose journaled operation is still unsettled is left alone.
//!
//! | left as | becomes |
//! |---|---|
//! | `creating` with no journal record (the crash came before it) | `error` |
//! | `attaching`, `detaching`, `in-use` | `in-use` when its server's spec lists it, else `available` |
//! | `extending` | `available` (the size is the recorded one; extend again) |
//! | `deleting` | deleted again (drivers delete idempotently), or `error_deleting` |

use super::{set_status, volume_ref};
use crate::ops::{OpError, Services};

/// Puts every interrupted volume into a state the API can act on.
///
/// # Errors
/// [`OpError::Store`] when the store cannot be read; a failing driver only leaves that volume
/// in `error_deleting`.
pub async fn recover(services: &Services) -> Result<(), OpError> {
    let journaled: std::collections::HashSet<String> = services
        .journal()
        .unfinished()
        .await?
        .into_iter()
        .map(|op| op.resource_id)
        .collect();
    for volume in services.store().list_volumes(None).await? {
        let id = volume.id.as_str();
        if journaled.contains(id) {
            // Its operation could not be settled this time (libvirt or a driver failed); it
            // keeps its transitional status and the next start retries it.
            tracing::warn!(volume_id = id, status = %volume.status, "an interrupted operation on this volume is still unsettled");
            continue;
        }
        match volume.status.as_str() {
            "creating" => {
                tracing::warn!(volume_id = id, "create interrupted before it was journaled");
                set_status(
                    services,
                    id,
                    "error",
                    Some("the create was interrupted by an agent restart".into()),
                )
                .await?;
            }
            "attaching" | "detaching" | "in-use" => {
                let attached = match &volume.attached_to {
                    Some(server) => match crate::ops::servers::spec_of(services, server).await {
                        Ok(spec) => spec
                            .boot_volume
                            .iter()
                            .chain(spec.volumes.iter())
                            .any(|v| v.volume_id == id),
                        Err(_) => false,
                    },
                    None => false,
                };
                if attached {
                    if volume.status != "in-use" {
                        set_status(services, id, "in-use", None).await?;
                    }
                } else {
                    if volume.status == "in-use" || volume.attached_to.is_some() {
                        tracing::warn!(volume_id = id, "attached to no server: now available");
                    }
                    super::attach::release(services, id).await?;
                }
            }
            "extending" => {
                set_status(services, id, "available", None).await?;
            }
            "deleting" => {
                let v = volume_ref(&volume);
                match super::driver::call(services, &volume.backend, move |p| async move {
                    p.volume_delete(&v).await
                })
                .await
                {
                    Ok(()) => services.store().delete_volume(id).await?,
                    Err(e) => {
                        set_status(
                            services,
                            id,
                            "error_deleting",
                            Some(crate::api::error::chain(&e)),
                        )
                        .await?;
                    }
                }
            }
            _ => {}
        }
    }
    Ok(())
}
