//! Crate and registry names: validation, the canonical form used for uniqueness, and the sparse
//! index path (`1/a`, `2/ab`, `3/a/abc`, `ab/cd/abcd`).

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

/// Checks a crate name against crates.io's rules: ASCII, first char a letter, then letters,
/// digits, `-`, `_`; at most 64 characters; not a reserved name.
pub fn validate_crate_name(name: &str) -> Result<(), NameError> {
    check_shape(name, false)?;
    let canon = canonical_name(name);
    if RESERVED.iter().any(|r| canonical_name(r) == canon) {
        return Err(NameError::Reserved(name.to_owned()));
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
        return Err(NameError::TooLong(name.to_owned()));
    }
    if !(first.is_ascii_alphabetic() || (underscore_start && first == '_')) {
        return Err(NameError::BadStart(name.to_owned()));
    }
    if let Some(ch) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
    {
        return Err(NameError::BadChar {
            name: name.to_owned(),
            ch,
        });
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
/// Only meaningful for ASCII names (the only ones accepted).
///
/// ```
/// use cargohold::index::index_path;
/// assert_eq!(index_path("a"), "1/a");
/// assert_eq!(index_path("abc"), "3/a/abc");
/// assert_eq!(index_path("MyCrate"), "my/cr/mycrate");
/// ```
pub fn index_path(name: &str) -> String {
    let lower = name.to_ascii_lowercase();
    let mut out = String::with_capacity(lower.len() + 6);
    match lower.len() {
        0 => return out,
        1 => out.push_str("1/"),
        2 => out.push_str("2/"),
        3 => {
            out.push_str("3/");
            out.push_str(&lower[..1]);
            out.push('/');
        }
        _ => {
            out.push_str(&lower[..2]);
            out.push('/');
            out.push_str(&lower[2..4]);
            out.push('/');
        }
    }
    out.push_str(&lower);
    out
}

/// Parses a sparse-index path back to the (lowercase) name it names, if the prefix is the one
/// cargo would compute for that name. `None` for anything else (answered 404 by the caller).
/// Allocation-free: it runs on every index request.
pub fn name_from_index_path(path: &str) -> Option<&str> {
    let (prefix, name) = path.rsplit_once('/')?;
    if name.is_empty() || !name.is_ascii() || name.bytes().any(|b| b.is_ascii_uppercase()) {
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

    proptest! {
        #[test]
        fn canonical_is_idempotent(s in "[A-Za-z][A-Za-z0-9_-]{0,63}") {
            let c = canonical_name(&s);
            prop_assert_eq!(canonical_name(&c), c.clone());
        }

        #[test]
        fn valid_names_have_parseable_paths(s in "[a-z][a-z0-9_-]{0,63}") {
            let p = index_path(&s);
            prop_assert_eq!(name_from_index_path(&p), Some(s.as_str()));
        }

        /// The allocation-free parser agrees with "the path cargo computes for the last segment".
        #[test]
        fn parser_matches_the_index_path_oracle(s in "([0-9a-zA-Z]{1,3}/){0,3}[a-zA-Z0-9_é-]{0,6}") {
            let oracle = s.rsplit('/').next().filter(|n| {
                !n.is_empty() && n.is_ascii() && !n.bytes().any(|b| b.is_ascii_uppercase()) && index_path(n) == s
            });
            prop_assert_eq!(name_from_index_path(&s), oracle);
        }

        #[test]
        fn validation_never_panics(s in "\\PC{0,80}") {
            let _ = validate_crate_name(&s);
            let _ = validate_registry_name(&s);
            let _ = name_from_index_path(&s);
        }
    }
}
