//! Sans-IO model of Cargo's registry protocol: crate names and index paths, index lines, the
//! publish frame, `config.json`, ETags. Pure functions over bytes and structs; no I/O, no async.
//! Every other module may import this one; it imports nothing from the crate.

pub mod config_json;
pub mod etag;
pub mod gzip;
pub mod license;
pub mod line;
pub mod name;
pub mod publish_frame;
pub mod wants;

pub use line::{IndexDep, IndexLine};
pub use name::{canonical_name, index_path, validate_crate_name, validate_registry_name};
