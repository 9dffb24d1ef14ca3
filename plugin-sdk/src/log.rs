//! Logging into the agent's log through the host's `log` import.
//!
//! ```
//! use hyperlet_plugin_sdk::prelude::*;
//!
//! let zone = "nova";
//! log::info!("filtering for zone {zone}");
//! log::warn!("{} hosts without a zone", 3);
//! ```
//!
//! The agent tags every line with the plugin's name and rate-limits it. Only a plugin that
//! calls these needs the `log` grant: the component imports `hyperlet:common/log` only when
//! the code uses it. Off wasm (unit tests) the lines are captured instead; read them with
//! [`testing::take_logs`](crate::testing::take_logs).

pub use crate::bindings::filter::hyperlet::common::log::Level;

/// Writes one line at `level`. The macros ([`info!`] etc.) format and call this.
pub fn write(level: Level, message: &str) {
    #[cfg(target_arch = "wasm32")]
    crate::bindings::filter::hyperlet::common::log::log(level, message);
    #[cfg(not(target_arch = "wasm32"))]
    crate::testing::capture_log(level, message);
}

#[doc(hidden)]
#[macro_export]
macro_rules! __hyperlet_log {
    ($level:ident, $($arg:tt)+) => {
        $crate::log::write($crate::log::Level::$level, &::std::format!($($arg)+))
    };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __hyperlet_log_trace {
    ($($arg:tt)+) => { $crate::__hyperlet_log!(Trace, $($arg)+) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __hyperlet_log_debug {
    ($($arg:tt)+) => { $crate::__hyperlet_log!(Debug, $($arg)+) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __hyperlet_log_info {
    ($($arg:tt)+) => { $crate::__hyperlet_log!(Info, $($arg)+) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __hyperlet_log_warn {
    ($($arg:tt)+) => { $crate::__hyperlet_log!(Warn, $($arg)+) };
}

#[doc(hidden)]
#[macro_export]
macro_rules! __hyperlet_log_error {
    ($($arg:tt)+) => { $crate::__hyperlet_log!(Error, $($arg)+) };
}

/// Logs at trace level, `format!`-style.
#[doc(inline)]
pub use crate::__hyperlet_log_trace as trace;

/// Logs at debug level, `format!`-style.
#[doc(inline)]
pub use crate::__hyperlet_log_debug as debug;

/// Logs at info level, `format!`-style.
#[doc(inline)]
pub use crate::__hyperlet_log_info as info;

/// Logs at warn level, `format!`-style.
#[doc(inline)]
pub use crate::__hyperlet_log_warn as warn;

/// Logs at error level, `format!`-style.
#[doc(inline)]
pub use crate::__hyperlet_log_error as error;
