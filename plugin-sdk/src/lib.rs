//! SDK for hyperlet plugins.
//!
//! Plugins are WebAssembly components built for `wasm32-wasip2` against the WIT packages in
//! `wit/`. This crate will carry the generated bindings, helpers and a native mock host for
//! unit tests; it is empty until the plugin platform lands.
#![deny(missing_docs)]
