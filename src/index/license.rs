//! Licence policy of a hosted registry: the SPDX `license` expression of a publish must be
//! satisfiable from the registry's `allowed_licenses`. Pure functions; the `spdx` crate parses.
//!
//! Rules (docs/OPERATIONS.md, "Licence policy"):
//! - An entry of the allowed list is one licence: an SPDX id (`MIT`), a `LicenseRef-…`, or a
//!   licence with an exception (`GPL-2.0-only WITH Classpath-exception-2.0`). No operators.
//! - The crate's expression is read as crates.io reads it (`/` as `OR`, deprecated ids such as
//!   `GPL-3.0` accepted, unknown ids refused). It passes when some choice of its `OR`
//!   branches uses only allowed licences: `MIT OR GPL-3.0` passes with `["MIT"]`,
//!   `MIT AND GPL-3.0` does not.
//! - `L WITH E`, where `E` is an exception of the SPDX list, passes when `L` is allowed (an SPDX
//!   exception only grants extra permissions) or when `L WITH E` itself is listed. An
//!   `AdditionRef-…` (a custom addition, which may restrict) passes only when listed exactly.
//! - `L+` (this version or later) passes when `L` or a later version is allowed (`Apache-1.1+`
//!   with `Apache-2.0`); GNU ids such as `GPL-2.0-or-later` are ids of their own.
//! - No `license`: refused, unless the registry sets `allow_license_file_only` and the
//!   publish names a `license_file`.

use spdx::{AdditionItem, Expression, LicenseReq, Licensee, ParseMode};

/// How entries of `allowed_licenses` are read: the SPDX list, case-sensitive, but deprecated
/// ids (such as `GPL-3.0`, still common on crates) are accepted so they can be allowed.
const ENTRY_MODE: ParseMode = ParseMode {
    allow_deprecated: true,
    ..ParseMode::STRICT
};

/// Parses one entry of `allowed_licenses`, or says why it is not one licence.
pub fn parse_allowed(entry: &str) -> Result<Licensee, String> {
    Licensee::parse_mode(entry.trim(), ENTRY_MODE).map_err(|e| {
        format!(
            "`{entry}` is not an SPDX licence id ({}); use one id per entry, such as `MIT` or `Apache-2.0`, a `LicenseRef-…`, or `ID WITH EXCEPTION`",
            e.reason
        )
    })
}

/// Problems with an `allowed_licenses` list, one message per bad entry.
pub fn check_allowed_list(list: &[String]) -> Vec<String> {
    list.iter().filter_map(|e| parse_allowed(e).err()).collect()
}

/// A registry's licence rule, ready to check publishes.
#[derive(Debug, Clone)]
pub struct LicensePolicy {
    allowed: Vec<Licensee>,
    /// The list as the operator wrote it, quoted in refusals.
    listed: Vec<String>,
    allow_license_file_only: bool,
}

impl LicensePolicy {
    /// The policy of a registry; `None` when `allowed` is empty (no policy). Entries that do
    /// not parse were refused when the registry was configured; here they are skipped.
    pub fn new(allowed: &[String], allow_license_file_only: bool) -> Option<Self> {
        if allowed.is_empty() {
            return None;
        }
        Some(LicensePolicy {
            allowed: allowed.iter().filter_map(|e| parse_allowed(e).ok()).collect(),
            listed: allowed.to_vec(),
            allow_license_file_only,
        })
    }

    fn rule(&self, registry: &str) -> String {
        format!(
            "registry `{registry}` accepts only crates whose licence can be satisfied from `allowed_licenses = [{}]`",
            self.listed
                .iter()
                .map(|l| format!("\"{l}\""))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    fn allows(&self, req: &LicenseReq) -> bool {
        let bare = LicenseReq {
            license: req.license.clone(),
            addition: None,
        };
        self.allowed
            .iter()
            .any(|l| l.satisfies(req) || (matches!(req.addition, Some(AdditionItem::Spdx(_))) && l.satisfies(&bare)))
    }

    /// Checks a publish's `license` and `license_file`; `Err` is the message for the client.
    pub fn check(&self, registry: &str, license: Option<&str>, license_file: Option<&str>) -> Result<(), String> {
        let license = license.map(str::trim).filter(|l| !l.is_empty());
        let Some(expr_text) = license else {
            let has_file = license_file.is_some_and(|f| !f.trim().is_empty());
            if has_file && self.allow_license_file_only {
                return Ok(());
            }
            let what = if has_file {
                "names only a `license-file`, without an SPDX `license` expression"
            } else {
                "declares no licence"
            };
            return Err(format!(
                "this crate {what}; {}{}. Set `license = \"…\"` in Cargo.toml to an SPDX expression using those licences{}",
                self.rule(registry),
                if has_file {
                    " and does not accept a `license-file` alone (`allow_license_file_only = false`)"
                } else {
                    ""
                },
                if has_file {
                    ", or ask the registry administrator to set `allow_license_file_only = true`"
                } else {
                    ""
                }
            ));
        };
        let expr = Expression::parse_mode(expr_text, ParseMode::LAX).map_err(|e| {
            let at = expr_text.get(e.span.clone()).unwrap_or("");
            format!(
                "the licence `{expr_text}` is not a valid SPDX expression ({} at `{at}`); {}. Write it with SPDX ids joined by `OR`, `AND` and `WITH`, such as `MIT OR Apache-2.0`",
                e.reason,
                self.rule(registry)
            )
        })?;
        if expr.evaluate(|req| self.allows(req)) {
            return Ok(());
        }
        let missing: Vec<String> = expr
            .evaluate_with_failures(|req| self.allows(req))
            .err()
            .unwrap_or_default()
            .iter()
            .map(|r| r.req.to_string())
            .collect();
        Err(format!(
            "the licence `{expr_text}` is not allowed: {}, and `{}` is not. Relicense the crate under an allowed licence (an `OR` with one of them suffices), or ask the registry administrator to add the licence to `allowed_licenses`",
            self.rule(registry),
            missing.join("`, `")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(list: &[&str]) -> LicensePolicy {
        let list: Vec<String> = list.iter().map(|s| (*s).to_owned()).collect();
        assert!(check_allowed_list(&list).is_empty(), "{:?}", check_allowed_list(&list));
        LicensePolicy::new(&list, false).unwrap()
    }

    fn ok(list: &[&str], expr: &str) -> bool {
        policy(list).check("r", Some(expr), None).is_ok()
    }

    #[test]
    fn satisfiable_expressions_pass() {
        assert!(ok(&["MIT"], "MIT"));
        assert!(ok(&["MIT"], "MIT OR GPL-3.0"));
        assert!(ok(&["MIT"], "GPL-3.0-only OR MIT"));
        assert!(ok(&["MIT", "Apache-2.0"], "MIT AND Apache-2.0"));
        assert!(ok(
            &["MIT", "Apache-2.0"],
            "(MIT OR GPL-3.0) AND (Apache-2.0 OR BSD-3-Clause)"
        ));
        // crates.io's lax forms: `/` as OR, deprecated ids.
        assert!(ok(&["Apache-2.0"], "MIT/Apache-2.0"));
        assert!(ok(&["GPL-3.0"], "GPL-3.0"));
        // or-later: a later version allowed satisfies `+`.
        assert!(ok(&["Apache-2.0"], "Apache-1.1+"));
        assert!(ok(&["GPL-2.0-or-later"], "GPL-2.0-or-later"));
        assert!(ok(&["LicenseRef-Acme"], "LicenseRef-Acme OR MIT"));
    }

    #[test]
    fn unsatisfiable_expressions_are_refused_naming_licence_and_rule() {
        let e = policy(&["MIT"])
            .check("corp", Some("MIT AND GPL-3.0"), None)
            .unwrap_err();
        assert!(e.contains("`MIT AND GPL-3.0`"), "{e}");
        assert!(e.contains("allowed_licenses = [\"MIT\"]"), "{e}");
        assert!(e.contains("registry `corp`"), "{e}");
        assert!(e.contains("`GPL-3.0` is not"), "{e}");
        assert!(e.contains("ask the registry administrator"), "{e}");
        assert!(!ok(&["MIT"], "GPL-3.0-only"));
        assert!(!ok(&["MIT"], "LicenseRef-Acme"));
        assert!(!ok(&["GPL-2.0-only"], "GPL-3.0-or-later"));
    }

    #[test]
    fn unparsable_expressions_are_refused_clearly() {
        for bad in ["MIT OR", "Not-A-Licence", "MIT AND (Apache-2.0", "MIT; rm -rf /"] {
            let e = policy(&["MIT"]).check("r", Some(bad), None).unwrap_err();
            assert!(e.contains("not a valid SPDX expression"), "{bad}: {e}");
            assert!(e.contains(bad), "{e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn with_exceptions() {
        // An SPDX exception only adds permissions: the bare licence allows it.
        assert!(ok(&["Apache-2.0"], "Apache-2.0 WITH LLVM-exception"));
        // Listing the combination allows it, but not the bare licence.
        assert!(ok(
            &["GPL-2.0-only WITH Classpath-exception-2.0"],
            "GPL-2.0-only WITH Classpath-exception-2.0"
        ));
        assert!(!ok(&["GPL-2.0-only WITH Classpath-exception-2.0"], "GPL-2.0-only"));
        // A custom addition may restrict: only allowed when listed exactly.
        assert!(!ok(&["MIT"], "MIT WITH AdditionRef-no-commercial"));
        assert!(ok(
            &["MIT WITH AdditionRef-no-commercial"],
            "MIT WITH AdditionRef-no-commercial"
        ));
        assert!(!ok(&["Apache-2.0"], "Apache-2.0 WITH Unknown-exception"));
    }

    #[test]
    fn license_file_only_and_no_licence() {
        let p = policy(&["MIT"]);
        let e = p.check("r", None, Some("LICENSE.txt")).unwrap_err();
        assert!(
            e.contains("only a `license-file`") && e.contains("allow_license_file_only"),
            "{e}"
        );
        assert!(e.contains("allowed_licenses = [\"MIT\"]"), "{e}");
        let e = p.check("r", None, None).unwrap_err();
        assert!(
            e.contains("declares no licence") && e.contains("allowed_licenses"),
            "{e}"
        );
        assert!(p.check("r", Some("  "), None).is_err(), "blank is no licence");
        let lax = LicensePolicy::new(&["MIT".to_owned()], true).unwrap();
        assert!(lax.check("r", None, Some("LICENSE.txt")).is_ok());
        assert!(lax.check("r", None, None).is_err(), "a file is still needed");
        assert!(
            lax.check("r", Some("GPL-3.0"), Some("LICENSE")).is_err(),
            "the expression still counts"
        );
    }

    #[test]
    fn list_entries_are_checked() {
        assert!(LicensePolicy::new(&[], false).is_none());
        let bad: Vec<String> = ["MIT", "Apache 2", "MIT OR Apache-2.0", "", "mit"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let problems = check_allowed_list(&bad);
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(problems[0].contains("`Apache 2`"), "{problems:?}");
        assert!(problems[1].contains("`MIT OR Apache-2.0`"), "{problems:?}");
        assert!(check_allowed_list(&["LicenseRef-Acme".into(), "GPL-3.0".into()]).is_empty());
    }

    proptest::proptest! {
        /// Any `license` / `license_file` text, and any list entry, is accepted or refused with
        /// a one-line message; never a panic.
        #[test]
        fn any_input_is_decided_without_panic(
            expr in "(MIT|Apache-2.0|GPL-3.0\\+|LicenseRef-x|WITH|AND|OR|/|\\(|\\)| |LLVM-exception|[ -~]){0,12}",
            any_text in proptest::prelude::any::<String>(),
            file in proptest::option::of(proptest::prelude::any::<String>()),
        ) {
            let p = policy(&["MIT", "Apache-2.0"]);
            for text in [&expr, &any_text] {
                if let Err(e) = p.check("r", Some(text), file.as_deref()) {
                    proptest::prop_assert!(e.contains("registry `r`"));
                }
                let _ = parse_allowed(text);
            }
        }
    }
}
