//! The single integration-test binary.
mod crash;
mod e2e;
mod proxy;
mod proxy_e2e;
mod support;
