//! Property tests: any config text, and any value for any key, is either accepted or refused
//! with a message; never a panic.

use std::path::Path;

use proptest::prelude::*;

use super::raw::RawConfig;
use super::{env, units, Config, Overrides};

/// Scalar keys of the file, by section (`""` = top level).
const KEYS: &[(&str, &[&str])] = &[
    ("", &["listen", "public_url", "data_dir", "shutdown_grace", "workers"]),
    ("tls", &["cert", "key"]),
    (
        "limits",
        &[
            "max_crate_size",
            "max_metadata_size",
            "max_unpacked_size",
            "max_json_body",
            "max_connections",
            "header_read_timeout",
            "request_timeout",
            "idle_timeout",
        ],
    ),
    ("cache", &["memory", "disk"]),
    (
        "registries.r",
        &[
            "kind",
            "description",
            "labels",
            "auth_required",
            "upstream",
            "offline",
            "prune_index",
            "index_ttl",
            "negative_ttl",
            "upstream_timeout",
            "upstreams",
            "shadow",
            "allow_upstream_names",
            "allowed_licenses",
            "allow_license_file_only",
            "advisories",
            "advisories_allow",
        ],
    ),
];

/// A TOML value of any type, with awkward contents.
fn toml_value() -> impl Strategy<Value = String> {
    let text = prop_oneof![
        any::<String>(),
        "[0-9. ]{0,8}(b|k|m|g|t|kb|kib|mib|gib|tib|s|m|h|d|ms|ns|y)?",
        Just("proxy".to_owned()),
        Just("hosted".to_owned()),
        Just("crate".to_owned()),
        Just("version".to_owned()),
        Just("deny".to_owned()),
        Just("RUSTSEC-2024-0001".to_owned()),
        Just("http://127.0.0.1:1/index/".to_owned()),
        Just("sparse+http://u:p@127.0.0.1:1/x/".to_owned()),
        Just("18446744073709551615TiB".to_owned()),
        Just("99999999999999999999d".to_owned()),
    ];
    prop_oneof![
        text.clone().prop_map(|s| toml_string(&s)),
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|f| format!("{f:?}").replace("NaN", "nan")),
        any::<bool>().prop_map(|b| b.to_string()),
        proptest::collection::vec(text, 0..3).prop_map(|v| {
            let items: Vec<String> = v.iter().map(|s| toml_string(s)).collect();
            format!("[{}]", items.join(", "))
        }),
    ]
}

/// `s` as a TOML basic string.
fn toml_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32 & 0xFFFF)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A config file made of known sections and keys with arbitrary values.
fn config_text() -> impl Strategy<Value = String> {
    let entry = (0..KEYS.len(), any::<prop::sample::Index>(), toml_value());
    proptest::collection::vec(entry, 0..8).prop_map(|entries| {
        let mut by_section: Vec<(String, Vec<String>)> = Vec::new();
        for (s, k, v) in entries {
            let (section, keys) = KEYS[s];
            let line = format!("{} = {v}", keys[k.index(keys.len())]);
            match by_section.iter_mut().find(|(n, _)| n == section) {
                Some((_, lines)) if !lines.iter().any(|l| l.split(' ').next() == line.split(' ').next()) => {
                    lines.push(line)
                }
                Some(_) => {}
                None => by_section.push((section.to_owned(), vec![line])),
            }
        }
        let mut text = String::new();
        for (section, lines) in by_section {
            if !section.is_empty() {
                text.push_str(&format!("[{section}]\n"));
            }
            for l in lines {
                text.push_str(&l);
                text.push('\n');
            }
        }
        text
    })
}

fn load(text: &str) {
    if let Ok(raw) = RawConfig::from_str(text, Path::new("fuzz.toml")) {
        let _ = Config::from_raw(raw, &Overrides::default());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn arbitrary_text_never_panics(text in prop_oneof![
        any::<String>(),
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]) {
        load(&text);
    }

    #[test]
    fn known_keys_with_arbitrary_values_never_panic(text in config_text()) {
        load(&text);
        // Top-level scalars must come before any table.
        load(&format!("{text}\n[registries.local]\nkind = \"hosted\"\nupstreams = [\"r\"]\n"));
    }

    #[test]
    fn environment_values_never_panic(k in any::<prop::sample::Index>(), value in any::<String>()) {
        let keys: Vec<String> = KEYS
            .iter()
            .filter(|(s, _)| !s.starts_with("registries"))
            .flat_map(|(s, ks)| ks.iter().map(move |k| if s.is_empty() { (*k).to_owned() } else { format!("{s}.{k}") }))
            .collect();
        let key = &keys[k.index(keys.len())];
        let mut raw = Config::embedded_default();
        if env::set(&mut raw, key, value.clone()).is_ok() {
            let _ = Config::from_raw(raw, &Overrides::default());
        }
        let _ = units::parse_size(&value);
        let _ = units::parse_duration(&value);
    }
}
