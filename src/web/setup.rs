//! The "Setup Client" snippets of a registry page and of a new token.

use crate::config::{RegistryKind, RegistrySpec};
use crate::registry::client_registry_name;

/// One snippet: the file it goes into and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Snippet {
    pub file: &'static str,
    pub text: String,
}

/// Why a merged registry should replace crates.io rather than be named with `--registry` for
/// public crates (checked with real cargo).
pub const MERGED_WHY: &str = "cargo treats each registry as its own source, so a public crate added with --registry is built a second time when a private crate pulls the same crate in through crates.io; with crates.io replaced by this registry, every public crate comes through one source and is built once.";

/// `~/.cargo/credentials.toml` for a registry, with the token's secret (or a placeholder).
pub fn credentials(reg: &str, token: &str) -> Snippet {
    let name = client_registry_name(reg);
    Snippet {
        file: "~/.cargo/credentials.toml",
        text: format!("[registries.{name}]\ntoken = \"Bearer {token}\"\n"),
    }
}

/// The snippets for `reg` served at `index_url` (`sparse+.../index/`).
pub fn snippets(reg: &RegistrySpec, index_url: &str) -> Vec<Snippet> {
    let name = client_registry_name(&reg.name);
    let providers = "[registry]\nglobal-credential-providers = [\"cargo:token\"]\n";
    match reg.kind {
        RegistryKind::Proxy => {
            // A [registries] entry rather than a [source] one, so cargo finds credentials for
            // it (deploy/cargo-config.example.toml does the same).
            let mut config = format!(
                "[registries.{name}]\nindex = \"{index_url}\"\n\n[source.crates-io]\nreplace-with = \"{name}\"\n"
            );
            if reg.auth_required {
                config.push('\n');
                config.push_str(providers);
                vec![
                    Snippet {
                        file: "~/.cargo/config.toml",
                        text: config,
                    },
                    credentials(&reg.name, "<token>"),
                ]
            } else {
                vec![Snippet {
                    file: "~/.cargo/config.toml",
                    text: config,
                }]
            }
        }
        RegistryKind::Hosted if !reg.upstreams.is_empty() => vec![
            Snippet {
                file: "~/.cargo/config.toml",
                text: format!(
                    "[registries.{name}]\nindex = \"{index_url}\"\n\n# public crates come through {name} too: one source, one build of each\n[source.crates-io]\nreplace-with = \"{name}\"\n\n{providers}"
                ),
            },
            credentials(&reg.name, "<token>"),
        ],
        RegistryKind::Hosted => vec![
            Snippet {
                file: "~/.cargo/config.toml",
                text: format!("[registries.{name}]\nindex = \"{index_url}\"\n\n{providers}"),
            },
            credentials(&reg.name, "<token>"),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> RegistrySpec {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn hosted_merged_and_proxy() {
        let url = "sparse+http://127.0.0.1:1/x/index/";
        let s = snippets(&spec(r#"{"name":"x","kind":"hosted"}"#), url);
        assert_eq!(s.len(), 2);
        assert!(s[0]
            .text
            .contains("[registries.x]\nindex = \"sparse+http://127.0.0.1:1/x/index/\""));
        assert!(s[0].text.contains("global-credential-providers = [\"cargo:token\"]"));
        assert_eq!(s[1].text, "[registries.x]\ntoken = \"Bearer <token>\"\n");
        let s = snippets(&spec(r#"{"name":"x","kind":"hosted","upstreams":["p"]}"#), url);
        assert!(s[0].text.contains("[source.crates-io]\nreplace-with = \"x\""));
        let s = snippets(&spec(r#"{"name":"x","kind":"proxy"}"#), url);
        assert_eq!(s.len(), 1);
        assert!(s[0].text.starts_with("[registries.x]\nindex = \"sparse+"));
        assert!(s[0].text.contains("[source.crates-io]\nreplace-with = \"x\""));
        let s = snippets(&spec(r#"{"name":"x","kind":"proxy","auth_required":true}"#), url);
        assert!(s.len() == 2 && s[0].text.contains("global-credential-providers"));
        let s = snippets(&spec(r#"{"name":"crates-io","kind":"proxy"}"#), url);
        assert!(s[0].text.contains("replace-with = \"cargohold-crates-io\""));
    }
}
