//! cargohold: one daemon serving Cargo registries (hosted, proxy, merged).
pub mod app;
pub mod cache;
pub mod cli;
pub mod config;
pub mod http;
pub mod index;
pub mod registry;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod upstream;
pub mod web;
