//! The single integration-test binary.
mod support;
mod e2e;
mod crash;
