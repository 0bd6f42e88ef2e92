//! The body of `PUT /api/v1/crates/new`: `u32 LE json length`, JSON metadata, `u32 LE crate
//! length`, `.crate` bytes, nothing after. Plus the metadata's shape (`NewCrate`).

use std::collections::BTreeMap;

use serde::Deserialize;

/// Why a publish body could not be split into its parts.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("the publish body is truncated: expected {expected} more bytes for the {part} but only {got} remain")]
    Truncated {
        part: &'static str,
        expected: u64,
        got: u64,
    },
    #[error("the publish body has {0} unexpected bytes after the crate file")]
    Trailing(u64),
    #[error("the publish metadata is {got} bytes; the limit is {limit} bytes")]
    JsonTooLarge { got: u64, limit: u64 },
    #[error("the crate file is {got} bytes; the limit is {limit} bytes")]
    CrateTooLarge { got: u64, limit: u64 },
}

/// The two parts of a publish body.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub json: &'a [u8],
    pub krate: &'a [u8],
}

fn read_len(body: &[u8], at: usize, part: &'static str) -> Result<u64, FrameError> {
    let bytes = body.get(at..at + 4).ok_or(FrameError::Truncated {
        part,
        expected: 4,
        got: body.len().saturating_sub(at) as u64,
    })?;
    Ok(u64::from(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])))
}

/// Splits a publish body, enforcing the size limits before looking at the parts.
///
/// ```
/// use cargohold::index::publish_frame::{build_frame, parse_frame};
/// let body = build_frame(b"{}", b"crate bytes");
/// let frame = parse_frame(&body, 1024, 1024).unwrap();
/// assert_eq!(frame.krate, b"crate bytes");
/// assert!(parse_frame(&body[..body.len() - 1], 1024, 1024).is_err());
/// ```
pub fn parse_frame(body: &[u8], max_json: u64, max_crate: u64) -> Result<Frame<'_>, FrameError> {
    let json_len = read_len(body, 0, "metadata length")?;
    if json_len > max_json {
        return Err(FrameError::JsonTooLarge {
            got: json_len,
            limit: max_json,
        });
    }
    let json_end = 4 + json_len as usize;
    let json = body.get(4..json_end).ok_or(FrameError::Truncated {
        part: "metadata",
        expected: json_len,
        got: body.len().saturating_sub(4) as u64,
    })?;
    let crate_len = read_len(body, json_end, "crate length")?;
    if crate_len > max_crate {
        return Err(FrameError::CrateTooLarge {
            got: crate_len,
            limit: max_crate,
        });
    }
    let crate_start = json_end + 4;
    let crate_end = crate_start + crate_len as usize;
    let krate = body.get(crate_start..crate_end).ok_or(FrameError::Truncated {
        part: "crate file",
        expected: crate_len,
        got: body.len().saturating_sub(crate_start) as u64,
    })?;
    if body.len() > crate_end {
        return Err(FrameError::Trailing((body.len() - crate_end) as u64));
    }
    Ok(Frame { json, krate })
}

/// Builds a publish body (used by tests and the bench harness).
pub fn build_frame(json: &[u8], krate: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + json.len() + krate.len());
    out.extend_from_slice(&(json.len() as u32).to_le_bytes());
    out.extend_from_slice(json);
    out.extend_from_slice(&(krate.len() as u32).to_le_bytes());
    out.extend_from_slice(krate);
    out
}

/// Publish metadata as cargo sends it. Unknown keys are ignored; missing optional ones default.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct NewCrate {
    pub name: String,
    pub vers: String,
    #[serde(default)]
    pub deps: Vec<NewCrateDep>,
    #[serde(default)]
    pub features: BTreeMap<String, Vec<String>>,
    #[serde(default)]
    pub authors: Vec<String>,
    pub description: Option<String>,
    pub documentation: Option<String>,
    pub homepage: Option<String>,
    pub readme: Option<String>,
    pub readme_file: Option<String>,
    #[serde(default)]
    pub keywords: Vec<String>,
    #[serde(default)]
    pub categories: Vec<String>,
    pub license: Option<String>,
    pub license_file: Option<String>,
    pub repository: Option<String>,
    pub links: Option<String>,
    pub rust_version: Option<String>,
}

/// A dependency in publish metadata: `name` is the real package name, `explicit_name_in_toml`
/// the alias when renamed.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct NewCrateDep {
    pub name: String,
    pub version_req: String,
    #[serde(default)]
    pub features: Vec<String>,
    #[serde(default)]
    pub optional: bool,
    #[serde(default = "yes")]
    pub default_features: bool,
    pub target: Option<String>,
    pub kind: Option<String>,
    pub registry: Option<String>,
    pub explicit_name_in_toml: Option<String>,
}

fn yes() -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_trip() {
        let body = build_frame(b"{}", b"crate");
        assert_eq!(
            parse_frame(&body, 100, 100).unwrap(),
            Frame {
                json: b"{}",
                krate: b"crate"
            }
        );
    }

    #[test]
    fn bad_frames() {
        let body = build_frame(b"{}", b"crate");
        assert!(matches!(
            parse_frame(&body[..3], 100, 100),
            Err(FrameError::Truncated { .. })
        ));
        assert!(matches!(
            parse_frame(&body[..body.len() - 1], 100, 100),
            Err(FrameError::Truncated { .. })
        ));
        let mut long = body.clone();
        long.push(0);
        assert_eq!(parse_frame(&long, 100, 100), Err(FrameError::Trailing(1)));
        assert!(matches!(
            parse_frame(&body, 1, 100),
            Err(FrameError::JsonTooLarge { .. })
        ));
        assert!(matches!(
            parse_frame(&body, 100, 2),
            Err(FrameError::CrateTooLarge { .. })
        ));
        let mut lying = body.clone();
        lying[0] = 0xff;
        assert!(parse_frame(&lying, u64::MAX, u64::MAX).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]

        #[test]
        fn never_panics(
            bytes in proptest::collection::vec(any::<u8>(), 0..600),
            json_len in prop_oneof![0u32..16, any::<u32>()],
            crate_len in prop_oneof![0u32..16, any::<u32>()],
            limit in prop_oneof![Just(u64::MAX), 0u64..32],
        ) {
            let _ = parse_frame(&bytes, u64::MAX, u64::MAX);
            let _ = parse_frame(&bytes, limit, limit);
            // Lengths that claim anything, around arbitrary contents.
            let mut framed = json_len.to_le_bytes().to_vec();
            framed.extend_from_slice(&bytes[..bytes.len() / 2]);
            framed.extend_from_slice(&crate_len.to_le_bytes());
            framed.extend_from_slice(&bytes[bytes.len() / 2..]);
            if let Ok(f) = parse_frame(&framed, limit, limit) {
                prop_assert!(f.json.len() as u64 <= limit && f.krate.len() as u64 <= limit);
                prop_assert_eq!(8 + f.json.len() + f.krate.len(), framed.len());
            }
            let _ = serde_json::from_slice::<NewCrate>(&bytes);
        }

        #[test]
        fn build_then_parse(json in proptest::collection::vec(any::<u8>(), 0..64),
                            krate in proptest::collection::vec(any::<u8>(), 0..64)) {
            let body = build_frame(&json, &krate);
            let f = parse_frame(&body, 64, 64).unwrap();
            prop_assert_eq!(f.json, &json[..]);
            prop_assert_eq!(f.krate, &krate[..]);
        }
    }
}
