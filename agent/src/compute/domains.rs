//! Domain operations on libvirt, each under the call deadline of [`Libvirt`].
//!
//! Every function runs on a libvirt worker (see [`Libvirt::with_connection`]), so a call stuck
//! on one hung QEMU occupies one worker but never blocks calls for other domains, and the
//! caller always gets an answer within the deadline. Only libvirt's supported APIs are used:
//! QMP or guest-agent passthrough would taint the domain (`custom-monitor`,
//! `custom-ga-command`), and libvirt would no longer vouch for it.

use super::{ComputeError, DomainMetadata, Libvirt, METADATA_NS};
use serde::Serialize;
use virt::domain::Domain;
use virt::sys;

/// A domain's power state as libvirt reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PowerState {
    /// Running.
    Running,
    /// Paused (by us, or by QEMU).
    Paused,
    /// Shut off (defined, not running).
    Shutoff,
    /// Shutting down.
    ShuttingDown,
    /// Crashed.
    Crashed,
    /// Suspended to memory by the guest.
    PmSuspended,
    /// Anything else.
    Unknown,
}

impl PowerState {
    fn from_raw(state: sys::virDomainState) -> Self {
        match state {
            sys::VIR_DOMAIN_RUNNING | sys::VIR_DOMAIN_BLOCKED => Self::Running,
            sys::VIR_DOMAIN_PAUSED => Self::Paused,
            sys::VIR_DOMAIN_SHUTDOWN => Self::ShuttingDown,
            sys::VIR_DOMAIN_SHUTOFF => Self::Shutoff,
            sys::VIR_DOMAIN_CRASHED => Self::Crashed,
            sys::VIR_DOMAIN_PMSUSPENDED => Self::PmSuspended,
            _ => Self::Unknown,
        }
    }
}

/// One of the agent's domains as found in libvirt.
#[derive(Debug, Clone)]
pub struct DomainStatus {
    /// Domain name.
    pub name: String,
    /// Power state.
    pub state: PowerState,
    /// Whether a managed-save image exists (the server is suspended to disk).
    pub has_managed_save: bool,
    /// The agent's metadata in the XML.
    pub metadata: DomainMetadata,
    /// The whole domain XML (inactive definition).
    pub xml: String,
}

fn lookup(conn: &virt::connect::Connect, name: &str) -> Result<Domain, virt::error::Error> {
    Domain::lookup_by_name(conn, name)
}

/// Live + config for a running domain, config only for one that is off.
fn device_flags(dom: &Domain) -> u32 {
    if dom.is_active().unwrap_or(false) {
        sys::VIR_DOMAIN_AFFECT_LIVE | sys::VIR_DOMAIN_AFFECT_CONFIG
    } else {
        sys::VIR_DOMAIN_AFFECT_CONFIG
    }
}

fn is_missing(e: &virt::error::Error) -> bool {
    e.code() == virt::error::ErrorNumber::NoDomain
}

impl Libvirt {
    /// Defines (persistently) a domain from XML.
    ///
    /// # Errors
    /// [`ComputeError`] when libvirt refuses or times out.
    pub async fn define(&self, xml: String) -> Result<(), ComputeError> {
        self.lifecycle()
            .with_connection("virDomainDefineXML", move |conn| {
                Domain::define_xml(conn, &xml).map(|_| ())
            })
            .await
    }

    /// Starts a defined domain (from its managed-save image when there is one).
    ///
    /// # Errors
    /// [`ComputeError`] when libvirt refuses or times out.
    pub async fn start(&self, name: &str) -> Result<(), ComputeError> {
        let name = name.to_string();
        self.lifecycle()
            .with_connection("virDomainCreate", move |conn| {
                lookup(conn, &name)?.create().map(|_| ())
            })
            .await
    }

    /// Hot-plugs a device (`<interface>`, `<disk>`) into a domain: into the running guest and
    /// its persistent definition when it runs, into the definition only when it is off.
    ///
    /// # Errors
    /// [`ComputeError`] when libvirt refuses or times out.
    pub async fn attach_device(&self, name: &str, xml: String) -> Result<(), ComputeError> {
        let name = name.to_string();
        self.lifecycle()
            .with_connection("virDomainAttachDeviceFlags", move |conn| {
                let dom = lookup(conn, &name)?;
                dom.attach_device_flags(&xml, device_flags(&dom))
                    .map(|_| ())
            })
            .await
    }

    /// Hot-unplugs a device from a domain (running guest and definition, as attach does).
    /// The guest must release it (ACPI eject); libvirt waits a few seconds for that.
    ///
    /// # Errors
    /// [`ComputeError`] when libvirt refuses or times out.
    pub async fn detach_device(&self, name: &str, xml: String) -> Result<(), ComputeError> {
        let name = name.to_string();
        self.lifecycle()
            .with_connection("virDomainDetachDeviceFlags", move |conn| {
                let dom = lookup(conn, &name)?;
                dom.detach_device_flags(&xml, device_flags(&dom))
                    .map(|_| ())
            })
            .await
    }

    /// Replaces the agent's `<metadata>` element of a domain (running guest and definition),
    /// so the spec a lost record is adopted from follows hot-plugs. `Ok(false)` when there is
    /// no such domain.
    ///
    /// # Errors
    /// [`ComputeError`] when libvirt refuses or times out.
    pub async fn set_metadata(
        &self,
        name: &str,
        metadata: &DomainMetadata,
    ) -> Result<bool, ComputeError> {
        let (name, xml) = (name.to_string(), metadata.element_xml());
        self.lifecycle()
            .with_connection("virDomainSetMetadata", move |conn| {
                let dom = match Domain::lookup_by_name(conn, &name) {
                    Ok(dom) => dom,
                    Err(e) if is_missing(&e) => return Ok(false),
                    Err(e) => return Err(e),
                };
                dom.set_metadata(
                    sys::VIR_DOMAIN_METADATA_ELEMENT as i32,
                    Some(&xml),
                    Some("hyperlet"),
                    Some(METADATA_NS),
                    device_flags(&dom),
                )
                .map(|_| true)
            })
            .await
    }

    /// Forces a domain off; succeeds when it is already off or gone.
    ///
    /// # Errors
    /// [`ComputeError`] when libvirt refuses or times out.
    pub async fn destroy(&self, name: &str) -> Result<(), ComputeError> {
        let name = name.to_string();
        self.lifecycle()
            .with_connection("virDomainDestroy", move |conn| match lookup(conn, &name) {
                Ok(dom) => match dom.is_active() {
                    Ok(true) => dom.destroy(),
                    Ok(false) => Ok(()),
                    Err(e) if is_missing(&e) => Ok(()),
                    Err(e) => Err(e),
                },
                Err(e) if is_missing(&e) => Ok(()),
                Err(e) => Err(e),
            })
            .await
    }

    /// Removes a domain's definition (and managed-save image); succeeds when it is gone.
    ///
    /// # Errors
    /// [`ComputeError`] when libvirt refuses or times out.
    pub async fn undefine(&self, name: &str) -> Result<(), ComputeError> {
        let name = name.to_string();
        self.lifecycle()
            .with_connection("virDomainUndefineFlags", move |conn| {
                match lookup(conn, &name) {
                    Ok(dom) => {
                        if dom.is_active().unwrap_or(false) {
                            dom.destroy()?;
                        }
                        match dom.undefine_flags(
                            sys::VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | sys::VIR_DOMAIN_UNDEFINE_NVRAM,
                        ) {
                            Err(e) if is_missing(&e) => Ok(()),
                            other => other,
                        }
                    }
                    Err(e) if is_missing(&e) => Ok(()),
                    Err(e) => Err(e),
                }
            })
            .await
    }

    /// Asks the guest to shut down (ACPI power button).
    ///
    /// # Errors
    /// [`ComputeError`] when libvirt refuses or times out.
    pub async fn shutdown(&self, name: &str) -> Result<(), ComputeError> {
        let name = name.to_string();
        self.lifecycle()
            .with_connection("virDomainShutdown", move |conn| {
                lookup(conn, &name)?.shutdown().map(|_| ())
            })
            .await
    }

    /// Asks the guest to reboot (ACPI).
    ///
    /// # Errors
    /// [`ComputeError`] when libvirt refuses or times out.
    pub async fn reboot(&self, name: &str) -> Result<(), ComputeError> {
        let name = name.to_string();
        self.lifecycle()
            .with_connection("virDomainReboot", move |conn| {
                lookup(conn, &name)?.reboot(sys::VIR_DOMAIN_REBOOT_ACPI_POWER_BTN)
            })
            .await
    }

    /// Pauses the vCPUs.
    ///
    /// # Errors
    /// [`ComputeError`] when libvirt refuses or times out.
    pub async fn pause(&self, name: &str) -> Result<(), ComputeError> {
        let name = name.to_string();
        self.lifecycle()
            .with_connection("virDomainSuspend", move |conn| {
                lookup(conn, &name)?.suspend().map(|_| ())
            })
            .await
    }

    /// Resumes paused vCPUs.
    ///
    /// # Errors
    /// [`ComputeError`] when libvirt refuses or times out.
    pub async fn unpause(&self, name: &str) -> Result<(), ComputeError> {
        let name = name.to_string();
        self.lifecycle()
            .with_connection("virDomainResume", move |conn| {
                lookup(conn, &name)?.resume().map(|_| ())
            })
            .await
    }

    /// Saves the guest's memory to disk and stops it (nova's suspend).
    ///
    /// # Errors
    /// [`ComputeError`] when libvirt refuses or times out.
    pub async fn managed_save(&self, name: &str) -> Result<(), ComputeError> {
        let name = name.to_string();
        self.lifecycle()
            .with_connection("virDomainManagedSave", move |conn| {
                lookup(conn, &name)?.managed_save(0).map(|_| ())
            })
            .await
    }

    /// The power state of a domain, or `None` when libvirt does not know it.
    ///
    /// # Errors
    /// [`ComputeError`] when libvirt fails or times out.
    pub async fn state(&self, name: &str) -> Result<Option<PowerState>, ComputeError> {
        let name = name.to_string();
        self.with_connection("virDomainGetState", move |conn| match lookup(conn, &name) {
            Ok(dom) => Ok(Some(PowerState::from_raw(dom.get_state()?.0))),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(e),
        })
        .await
    }

    /// The domain's XML (`inactive` for the persistent definition), or `None` when missing.
    ///
    /// # Errors
    /// [`ComputeError`] when libvirt fails or times out.
    pub async fn xml(&self, name: &str, inactive: bool) -> Result<Option<String>, ComputeError> {
        let name = name.to_string();
        let flags = if inactive {
            sys::VIR_DOMAIN_XML_INACTIVE
        } else {
            0
        };
        self.with_connection("virDomainGetXMLDesc", move |conn| {
            match lookup(conn, &name) {
                Ok(dom) => dom.get_xml_desc(flags).map(Some),
                Err(e) if is_missing(&e) => Ok(None),
                Err(e) => Err(e),
            }
        })
        .await
    }

    /// A picture of the domain's first screen: libvirt's MIME type and the bytes (at most
    /// `max_bytes`; a larger picture is an error).
    ///
    /// # Errors
    /// [`ComputeError`] when libvirt fails (no display, a missing domain) or times out.
    pub async fn screenshot(
        &self,
        name: &str,
        max_bytes: usize,
    ) -> Result<(String, Vec<u8>), ComputeError> {
        let name = name.to_string();
        self.with_connection("virDomainScreenshot", move |conn| {
            let dom = lookup(conn, &name)?;
            let stream = virt::stream::Stream::new(conn, 0)?;
            let mime = dom.screenshot(&stream, 0, 0)?;
            let mut picture = Vec::new();
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = match stream.recv(&mut buf) {
                    Ok(n) => n,
                    Err(e) => {
                        let _ = stream.abort();
                        return Err(e);
                    }
                };
                if n == 0 {
                    break;
                }
                if picture.len() + n > max_bytes {
                    let _ = stream.abort();
                    return Ok(None);
                }
                picture.extend_from_slice(&buf[..n]);
            }
            stream.finish()?;
            Ok(Some((mime, picture)))
        })
        .await?
        .ok_or_else(|| ComputeError::Libvirt {
            call: "virDomainScreenshot",
            message: format!("the picture is larger than {max_bytes} bytes"),
        })
    }

    /// Every domain tagged with the agent's metadata for `node_id`.
    ///
    /// Listings are single-flight: one that overran its caller's deadline still holds the
    /// listing lock on its worker, and the next listing waits for it (at most the deadline)
    /// instead of piling a second dump of every domain onto a slow libvirtd.
    ///
    /// # Errors
    /// [`ComputeError`] when libvirt fails or times out, [`ComputeError::Busy`] when the
    /// previous listing is still running after the deadline.
    pub async fn list_ours(&self, node_id: &str) -> Result<Vec<DomainStatus>, ComputeError> {
        const CALL: &str = "virConnectListAllDomains";
        let node_id = node_id.to_string();
        let listing =
            match tokio::time::timeout(self.timeout(), self.listing_lock().lock_owned()).await {
                Ok(guard) => guard,
                Err(_) => {
                    return Err(ComputeError::Busy {
                        call: CALL,
                        workers: 1,
                        seconds: self.timeout().as_secs(),
                    })
                }
            };
        self.with_connection(CALL, move |conn| {
            let _listing = listing; // released when this worker is done, not when the caller gives up
            let mut ours = Vec::new();
            for dom in conn.list_all_domains(0)? {
                let xml = match dom.get_xml_desc(sys::VIR_DOMAIN_XML_INACTIVE) {
                    Ok(xml) => xml,
                    Err(e) if is_missing(&e) => continue, // gone between listing and reading
                    // Anything else: no listing rather than one that misses a domain.
                    Err(e) => return Err(e),
                };
                let Some(metadata) = DomainMetadata::from_domain_xml(&xml) else {
                    continue;
                };
                if metadata.node_id != node_id {
                    continue;
                }
                let (state, _) = match dom.get_state() {
                    Ok(state) => state,
                    Err(e) if is_missing(&e) => continue,
                    Err(e) => return Err(e),
                };
                ours.push(DomainStatus {
                    name: dom.get_name()?,
                    state: PowerState::from_raw(state),
                    has_managed_save: dom.has_managed_save(0).unwrap_or(false),
                    metadata,
                    xml,
                });
            }
            Ok(ours)
        })
        .await
    }

    /// Sets a guest user's password through the QEMU guest agent, with libvirt's own call
    /// (`virDomainSetUserPassword`: no `custom-ga-command` taint, unlike agent passthrough).
    ///
    /// # Errors
    /// [`ComputeError::NoGuestAgent`] when the guest has no agent answering, other
    /// [`ComputeError`]s when libvirt fails or times out.
    pub async fn set_user_password(
        &self,
        name: &str,
        user: &str,
        password: &str,
    ) -> Result<(), ComputeError> {
        let (name, user, password) = (name.to_string(), user.to_string(), password.to_string());
        self.with_connection("virDomainSetUserPassword", move |conn| {
            lookup(conn, &name)?
                .set_user_password(&user, &password, 0)
                .map(|_| ())
        })
        .await
        .map_err(|e| match e {
            ComputeError::Libvirt { message, .. }
                if message.contains("agent is not connected")
                    || message.contains("Guest agent is not responding")
                    || message.contains("not connected") =>
            {
                ComputeError::NoGuestAgent(message)
            }
            other => other,
        })
    }
}
