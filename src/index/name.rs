//! Crate and registry names: validation, the canonical form used for uniqueness, and the sparse
//! index path (`1/a`, `2/ab`, `3/a/abc`, `ab/cd/abcd`).
//!
//! Every function here is total: any string (non-ASCII, 30,000 characters, `../`, `%2F`, ...)
//! gives an answer, never a panic. Names that reach a cache key, a file name or an upstream URL
//! must first pass [`is_lookup_name`] (or [`validate_crate_name`] on publish); versions
//! [`validate_version`].

/// Longest crate name accepted (crates.io's limit).
pub const MAX_CRATE_NAME_LEN: usize = 64;
/// Longest registry name accepted.
pub const MAX_REGISTRY_NAME_LEN: usize = 64;

/// The registry-name rule, quoted verbatim in errors.
pub const REGISTRY_NAME_RULE: &str = "a registry name must match ^[a-z][a-z0-9_.-]*$ (start with a lowercase letter; then lowercase letters, digits, `_`, `.` or `-`) and be at most 64 characters";

/// Names reserved by the Rust toolchain or by Windows, compared in canonical form.
const RESERVED: &[&str] = &[
    "alloc",
    "core",
    "std",
    "proc_macro",
    "proc-macro",
    "test",
    "rustc",
    "rustdoc",
    "cargo",
    "rust",
    "rustup",
    "compiler_builtins",
    "panic_abort",
    "panic_unwind",
    "unwind",
    "profiler_builtins",
    "build",
    "src",
    "nul",
    "con",
    "prn",
    "aux",
    "com1",
    "com2",
    "com3",
    "com4",
    "com5",
    "com6",
    "com7",
    "com8",
    "com9",
    "lpt1",
    "lpt2",
    "lpt3",
    "lpt4",
    "lpt5",
    "lpt6",
    "lpt7",
    "lpt8",
    "lpt9",
];

/// Why a crate name was refused. The message is shown to users by cargo.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the crate name is empty")]
    Empty,
    #[error("the crate name `{0}` is longer than {MAX_CRATE_NAME_LEN} characters")]
    TooLong(String),
    #[error("the crate name `{0}` must start with an ASCII letter")]
    BadStart(String),
    #[error("the crate name `{name}` contains `{ch}`; only ASCII letters, digits, `-` and `_` are allowed")]
    BadChar { name: String, ch: char },
    #[error("the crate name `{0}` is reserved")]
    Reserved(String),
}

/// Longest version string accepted (crates.io's limit).
pub const MAX_VERSION_LEN: usize = 150;

/// A name as shown in an error message: at most 100 characters, then `…` (a 30,000-character
/// name is not echoed back whole).
fn shown(name: &str) -> String {
    shorten(name, 100)
}

/// `text` as echoed in an error message: at most `max` characters, then `…`.
pub fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// Whether `name` may be looked up: the shape every crate name has (first an ASCII letter or
/// `_`, then ASCII letters, digits, `-`, `_`; 1 to 64 characters), so it is safe in a cache
/// key, a file name and a URL path segment as it is. Reserved names pass (they are refused on
/// publish, not on reads). Allocation-free: it runs on every index and download request.
///
/// ```
/// use cargohold::index::name::is_lookup_name;
/// assert!(is_lookup_name("serde_json") && is_lookup_name("Foo-Bar"));
/// assert!(!is_lookup_name("..") && !is_lookup_name("a/b") && !is_lookup_name("é"));
/// ```
pub fn is_lookup_name(name: &str) -> bool {
    let b = name.as_bytes();
    !b.is_empty()
        && b.len() <= MAX_CRATE_NAME_LEN
        && (b[0].is_ascii_alphabetic() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'-' || *c == b'_')
}

/// Checks a crate name given in a request path (download, yank, owners): the shape of
/// [`is_lookup_name`], with the reason when it fails.
pub fn validate_lookup_name(name: &str) -> Result<(), NameError> {
    check_shape(name, true)
}

/// Checks a version given in a request (or an index line): at most [`MAX_VERSION_LEN`]
/// characters and valid semver (build metadata after a literal `+`). Such a string only holds
/// ASCII letters, digits, `.`, `-` and `+`, so it is safe in a cache key and a URL.
///
/// ```
/// use cargohold::index::name::validate_version;
/// assert!(validate_version("1.0.0+build.5").is_ok());
/// assert!(validate_version("1.0").is_err() && validate_version("../x").is_err());
/// ```
pub fn validate_version(version: &str) -> Result<semver::Version, String> {
    if version.len() > MAX_VERSION_LEN {
        return Err(format!(
            "the version `{}` is longer than {MAX_VERSION_LEN} characters",
            shown(version)
        ));
    }
    semver::Version::parse(version).map_err(|e| format!("`{}` is not a valid semver version: {e}", shown(version)))
}

/// Checks a crate name against crates.io's rules: ASCII, first char a letter, then letters,
/// digits, `-`, `_`; at most 64 characters; not a reserved name.
pub fn validate_crate_name(name: &str) -> Result<(), NameError> {
    check_shape(name, false)?;
    let canon = canonical_name(name);
    if RESERVED.iter().any(|r| canonical_name(r) == canon) {
        return Err(NameError::Reserved(shown(name)));
    }
    Ok(())
}

/// Checks a dependency name (an alias may also start with `_`). Non-ASCII is refused.
pub fn validate_dep_name(name: &str) -> Result<(), NameError> {
    check_shape(name, true)
}

/// Length, first character (a letter, or also `_`), then ASCII alphanumerics, `-`, `_`.
fn check_shape(name: &str, underscore_start: bool) -> Result<(), NameError> {
    let first = name.chars().next().ok_or(NameError::Empty)?;
    if name.len() > MAX_CRATE_NAME_LEN {
        return Err(NameError::TooLong(shown(name)));
    }
    if !(first.is_ascii_alphabetic() || (underscore_start && first == '_')) {
        return Err(NameError::BadStart(shown(name)));
    }
    if let Some(ch) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(NameError::BadChar { name: shown(name), ch });
    }
    Ok(())
}

/// The form two names are compared in for uniqueness: lowercase, `-` replaced by `_`.
///
/// ```
/// use cargohold::index::canonical_name;
/// assert_eq!(canonical_name("Foo-Bar"), canonical_name("foo_bar"));
/// ```
pub fn canonical_name(name: &str) -> String {
    name.chars()
        .map(|c| if c == '-' { '_' } else { c.to_ascii_lowercase() })
        .collect()
}

/// The sparse-index path of a name (cargo's `make_dep_path`), lowercased.
///
/// Total: lengths and prefixes are counted in characters, so a non-ASCII name gives a path
/// instead of a panic (for ASCII names, the only ones accepted, that is cargo's path). The
/// result is only safe in a URL or file name when the name passed [`is_lookup_name`].
///
/// ```
/// use cargohold::index::index_path;
/// assert_eq!(index_path("a"), "1/a");
/// assert_eq!(index_path("abc"), "3/a/abc");
/// assert_eq!(index_path("MyCrate"), "my/cr/mycrate");
/// assert_eq!(index_path("日本語"), "3/日/日本語");
/// ```
pub fn index_path(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let mut out = String::with_capacity(lower.len() + 6);
    out.push_str(&dir_prefix(&lower));
    if !lower.is_empty() {
        out.push('/');
    }
    out.push_str(&lower);
    out
}

/// The directory part of a name's index path in the name's own case: `1`, `2`, `3/a`,
/// `ab/cd` (empty for the empty name). Counted in characters, so total on any string.
///
/// ```
/// use cargohold::index::name::dir_prefix;
/// assert_eq!(dir_prefix("Serde"), "Se/rd");
/// assert_eq!(dir_prefix("éa"), "2");
/// ```
pub fn dir_prefix(name: &str) -> String {
    // Byte offsets of the 1st..4th character boundaries.
    let mut ends = name.char_indices().map(|(i, c)| i + c.len_utf8());
    let (e1, e2, e3, e4) = (ends.next(), ends.next(), ends.next(), ends.next());
    match (e1, e2, e3, e4) {
        (None, ..) => String::new(),
        (Some(_), None, ..) => "1".into(),
        (Some(_), Some(_), None, _) => "2".into(),
        (Some(a), Some(_), Some(_), None) => format!("3/{}", &name[..a]),
        (Some(_), Some(b), Some(_), Some(d)) => format!("{}/{}", &name[..b], &name[b..d]),
    }
}

/// Parses a sparse-index path back to the (lowercase) name it names, if that name passes
/// [`is_lookup_name`] and the prefix is the one cargo would compute for it. `None` for
/// anything else (answered 404 by the caller, never looked up). Allocation-free: it runs on
/// every index request.
pub fn name_from_index_path(path: &str) -> Option<&str> {
    let (prefix, name) = path.rsplit_once('/')?;
    if !is_lookup_name(name) || name.bytes().any(|b| b.is_ascii_uppercase()) {
        return None;
    }
    let (p, n) = (prefix.as_bytes(), name.as_bytes());
    let ok = match n.len() {
        1 => p == b"1",
        2 => p == b"2",
        3 => p.len() == 3 && p[..2] == *b"3/" && p[2] == n[0],
        _ => p.len() == 5 && p[2] == b'/' && p[..2] == n[..2] && p[3..] == n[2..4],
    };
    ok.then_some(name)
}

/// Checks a registry name against [`REGISTRY_NAME_RULE`].
pub fn validate_registry_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let ok = matches!(chars.next(), Some('a'..='z'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_' | '.' | '-'))
        && name.len() <= MAX_REGISTRY_NAME_LEN;
    if ok {
        Ok(())
    } else {
        Err(format!("invalid registry name `{name}`: {REGISTRY_NAME_RULE}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn paths_follow_cargo() {
        assert_eq!(index_path("a"), "1/a");
        assert_eq!(index_path("ab"), "2/ab");
        assert_eq!(index_path("abc"), "3/a/abc");
        assert_eq!(index_path("cargo"), "ca/rg/cargo");
        assert_eq!(index_path("MyCrate"), "my/cr/mycrate");
    }

    #[test]
    fn index_path_round_trips_and_rejects_wrong_prefix() {
        assert_eq!(name_from_index_path("cargo"), None);
        assert_eq!(name_from_index_path("1/a"), Some("a"));
        assert_eq!(name_from_index_path("2/ab"), Some("ab"));
        assert_eq!(name_from_index_path("x/1/a"), None);
        assert_eq!(name_from_index_path("é/ab/abcd"), None);
        assert_eq!(name_from_index_path("ca/rg/cargo"), Some("cargo"));
        assert_eq!(name_from_index_path("3/a/abc"), Some("abc"));
        assert_eq!(name_from_index_path("ca/rx/cargo"), None);
        assert_eq!(name_from_index_path("my/cr/MyCrate"), None);
        assert_eq!(name_from_index_path("1/ab"), None);
        assert_eq!(name_from_index_path(""), None);
    }

    #[test]
    fn crate_name_rules() {
        for bad in [
            "1abc",
            "a.b",
            "über",
            "",
            "-x",
            "_x",
            "nul",
            "std",
            "Proc-Macro",
            "COM1",
        ] {
            assert!(validate_crate_name(bad).is_err(), "{bad} should be refused");
        }
        assert!(validate_crate_name(&"a".repeat(65)).is_err());
        for good in ["a", "foo-bar", "Foo_Bar9", &"a".repeat(64)] {
            assert!(validate_crate_name(good).is_ok(), "{good} should be accepted");
        }
        assert!(validate_dep_name("_alias").is_ok());
    }

    #[test]
    fn canonical_forms_collide() {
        assert_eq!(canonical_name("Foo-Bar"), canonical_name("foo_bar"));
        assert_ne!(canonical_name("foobar"), canonical_name("foo_bar"));
    }

    #[test]
    fn registry_names() {
        for good in ["local", "crates-io", "a", "team.a_b-9"] {
            assert!(validate_registry_name(good).is_ok());
        }
        for bad in ["", "Local", "9a", "-a", "a b", "a/b", &"a".repeat(65)] {
            let err = validate_registry_name(bad).unwrap_err();
            assert!(err.contains("^[a-z][a-z0-9_.-]*$"));
        }
    }

    #[test]
    fn non_ascii_and_hostile_names_do_not_panic() {
        assert_eq!(index_path("éa"), "2/éa");
        assert_eq!(index_path("日本語"), "3/日/日本語");
        assert_eq!(index_path("ab日本"), "ab/日本/ab日本");
        assert_eq!(index_path(""), "");
        assert_eq!(dir_prefix("a"), "1");
        for bad in ["..", "a/b", "a?b", "a#b", "a\\b", "éa", "a b", "-a", "1a", ""] {
            assert!(!is_lookup_name(bad), "{bad:?}");
            assert!(validate_lookup_name(bad).is_err(), "{bad:?}");
        }
        assert!(!is_lookup_name(&"a".repeat(65)));
        for good in ["a", "_a", "Foo-Bar", "serde_json", &"a".repeat(64)] {
            assert!(is_lookup_name(good) && validate_lookup_name(good).is_ok(), "{good:?}");
        }
        // Messages do not echo a 30,000-character name whole.
        let long = "a".repeat(30_000);
        assert!(validate_lookup_name(&long).unwrap_err().to_string().len() < 200);
        assert!(validate_lookup_name(&long[..65])
            .unwrap_err()
            .to_string()
            .contains(&long[..65]));
        assert!(validate_version(&long).unwrap_err().len() < 200);
        assert_eq!(name_from_index_path(&index_path(&long)), None);
        assert_eq!(name_from_index_path("../?x/..?x"), None);
        assert_eq!(name_from_index_path("1/-"), None);
    }

    #[test]
    fn versions() {
        for good in ["1.0.0", "0.1.0-rc.1", "1.0.0+build.5", "1.2.3-alpha+x-y"] {
            assert!(validate_version(good).is_ok(), "{good}");
        }
        for bad in [
            "1.0", "", "../1.0.0", "1.0.0?x", "1.0.0#x", "1.0.0/x", "v1.0.0", "1.0.0 ",
        ] {
            assert!(validate_version(bad).is_err(), "{bad:?}");
        }
        assert!(validate_version(&format!("1.0.0-{}", "a".repeat(150))).is_err());
    }

    /// Arbitrary text: any Unicode, or arbitrary bytes decoded lossily.
    fn any_text() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            proptest::collection::vec(any::<u8>(), 0..80).prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
            "[a-zA-Z0-9_./?#%\\\\-]{0,12}",
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn canonical_is_idempotent(s in "[A-Za-z][A-Za-z0-9_-]{0,63}") {
            let c = canonical_name(&s);
            prop_assert_eq!(canonical_name(&c), c.clone());
        }

        #[test]
        fn valid_names_have_parseable_paths(s in "[a-z_][a-z0-9_-]{0,63}") {
            let p = index_path(&s);
            prop_assert_eq!(name_from_index_path(&p), Some(s.as_str()));
            prop_assert!(p.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_-/".contains(&b)));
        }

        /// The allocation-free parser agrees with "the path cargo computes for the last segment".
        #[test]
        fn parser_matches_the_index_path_oracle(s in "([0-9a-zA-Z]{1,3}/){0,3}[a-zA-Z0-9_é-]{0,6}") {
            let oracle = s.rsplit('/').next().filter(|n| {
                is_lookup_name(n) && !n.bytes().any(|b| b.is_ascii_uppercase()) && index_path(n) == s
            });
            prop_assert_eq!(name_from_index_path(&s), oracle);
        }

        #[test]
        fn validation_never_panics(s in "\\PC{0,80}") {
            let _ = validate_crate_name(&s);
            let _ = validate_registry_name(&s);
            let _ = name_from_index_path(&s);
        }

        /// `index_path` and its relatives are total on any input, and whatever the path parser
        /// accepts is a lookup name whose own path it is.
        #[test]
        fn name_functions_are_total(s in any_text()) {
            let p = index_path(&s);
            prop_assert!(p.ends_with(&s.to_ascii_lowercase()));
            let _ = dir_prefix(&s);
            let c = canonical_name(&s);
            prop_assert_eq!(canonical_name(&c), c.clone());
            let _ = validate_crate_name(&s);
            let _ = validate_dep_name(&s);
            let _ = validate_registry_name(&s);
            if let Ok(v) = validate_version(&s) {
                prop_assert!(s.bytes().all(|b| b.is_ascii_alphanumeric() || b".-+".contains(&b)), "{:?}", v);
            }
            if is_lookup_name(&s) {
                prop_assert!(validate_lookup_name(&s).is_ok());
                let (path, lower) = (index_path(&s), s.to_ascii_lowercase());
                prop_assert_eq!(name_from_index_path(&path), Some(lower.as_str()));
            } else {
                prop_assert!(validate_lookup_name(&s).is_err());
            }
            for path in [s.clone(), p] {
                if let Some(n) = name_from_index_path(&path) {
                    prop_assert!(is_lookup_name(n));
                    prop_assert_eq!(index_path(n), path.clone());
                }
            }
        }
    }
}
