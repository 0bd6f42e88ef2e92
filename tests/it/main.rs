//! The single integration-test binary.
mod admin_cli;
mod bad_input;
mod bundle;
mod crash;
mod deploy;
mod e2e;
mod fake_upstream_selftest;
mod gc;
mod hardening;
mod migration;
mod miss_cost;
mod ops;
mod proxy;
mod proxy_e2e;
mod support;
mod upstream_faults;
mod warm;
