//! What the service is told about servers, and where it stores the password a guest posts.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// Everything the trees are rendered from, for one server.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceMetadata {
    /// The server's id (a UUID). Served as `uuid` (OpenStack) and as `instance-id` (EC2).
    pub uuid: String,
    /// The server's display name.
    pub name: String,
    /// The guest's hostname.
    pub hostname: String,
    /// The availability zone the server runs in.
    pub availability_zone: String,
    /// The project (tenant) owning the server.
    pub project_id: String,
    /// The position of the server in a multi-create request (EC2 `ami-launch-index`).
    pub launch_index: u32,
    /// The flavor name (EC2 `instance-type`).
    pub instance_type: String,
    /// The image id, served as EC2 `ami-id` exactly as given.
    pub image_id: String,
    /// Public keys: key name → OpenSSH public key.
    pub public_keys: BTreeMap<String, String>,
    /// The raw user data, if any.
    pub user_data: Option<Vec<u8>>,
    /// The server's metadata (`nova boot --meta`).
    pub meta: BTreeMap<String, String>,
    /// The IPv4 address of the port the request came from.
    pub local_ipv4: Ipv4Addr,
    /// The MAC address of that port (`fa:16:3e:…`).
    pub mac: String,
    /// The OpenStack `network_data.json` document, served as is.
    pub network_data: serde_json::Value,
    /// Served as `vendor_data.json` (`{}` by default); `vendor_data2.json` is always `{}`.
    pub vendor_data: serde_json::Value,
}

/// Where the service finds servers and stores passwords (the agent's store).
///
/// [`MetadataSource::identify`] is called on every request, inline on the async runtime: it
/// must not block (an in-memory lookup, not a query). The password methods may block (a SQLite
/// query, say): the service calls them on a blocking thread, under the request's deadline.
pub trait MetadataSource: Send + Sync + 'static {
    /// The server whose port on `network_id` has this address and (when known) MAC; `None`
    /// otherwise. The service always passes the MAC the namespace's neighbour table holds for
    /// the caller: a request whose MAC is unknown is refused before this is called.
    ///
    /// It must not block: it runs on the async runtime, once per request. Hand out the same
    /// `Arc` for as long as the server's metadata does not change: the service keeps the
    /// documents it renders from it and renders again only for different metadata.
    fn identify(
        &self,
        network_id: &str,
        ip: Ipv4Addr,
        mac: Option<[u8; 6]>,
    ) -> Option<Arc<InstanceMetadata>>;

    /// The password posted by the guest, if any. May block.
    fn password(&self, server_id: &str) -> Option<String>;

    /// Stores the password once; a second set is refused with [`SetPasswordError::AlreadySet`].
    /// May block.
    ///
    /// # Errors
    ///
    /// [`SetPasswordError::AlreadySet`] when a password is stored already,
    /// [`SetPasswordError::Store`] when the store fails.
    fn set_password(&self, server_id: &str, password: &str) -> Result<(), SetPasswordError>;
}

/// Why a password was not stored.
#[derive(Debug, thiserror::Error)]
pub enum SetPasswordError {
    /// The guest already posted a password (nova answers 409 as well).
    #[error("A password is already set for this server")]
    AlreadySet,
    /// The store failed; the message says why.
    #[error("Cannot store the password: {0}")]
    Store(String),
}
