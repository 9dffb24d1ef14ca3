//! One file per resource. Handlers only extract, validate and call [`crate::ops`].

pub mod consoles;
pub mod events;
pub mod health;
pub mod host;
pub mod images;
pub mod metrics;
pub mod networks;
pub mod openapi;
pub mod peer;
pub mod plugins;
pub mod security_groups;
pub mod servers;
pub mod ui;
pub mod volumes;
