//! What a user asks to fetch or carry: the registry packages of a `Cargo.lock` and lists of
//! `name`, `name@REQ` and `name@=VERSION` lines (`warm --lockfile/--crates`, `export`).
//! Pure parsing; no I/O.

use serde::Deserialize;

/// What to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Want {
    pub name: String,
    pub version: Pick,
    /// The checksum a lockfile recorded, checked too.
    pub checksum: Option<String>,
}

/// Which versions of a crate to fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Pick {
    /// The newest non-yanked version (every version with `--all-versions`).
    Newest,
    /// The newest non-yanked version matching a requirement (`name@1.2`, cargo's rules).
    Req(semver::VersionReq),
    /// Exactly this version (`name@=1.2.3`, and every lockfile entry).
    Exact(String),
}

#[derive(Deserialize)]
struct Lock {
    #[serde(default)]
    package: Vec<LockPackage>,
}

#[derive(Deserialize)]
struct LockPackage {
    name: String,
    version: String,
    source: Option<String>,
    checksum: Option<String>,
}

/// The registry packages of a `Cargo.lock` (path and git dependencies are skipped).
pub fn from_lockfile(text: &str) -> Result<Vec<Want>, String> {
    let lock: Lock = toml::from_str(text).map_err(|e| format!("not a Cargo.lock: {e}"))?;
    Ok(lock
        .package
        .into_iter()
        .filter(|p| {
            p.source
                .as_deref()
                .is_some_and(|s| s.starts_with("registry+") || s.starts_with("sparse+"))
        })
        .map(|p| Want {
            name: p.name,
            version: Pick::Exact(p.version),
            checksum: p.checksum,
        })
        .collect())
}

/// A list: one crate per line, `name` (the newest version), `name@REQ` (the newest version
/// matching a cargo version requirement, e.g. `serde@1.0`, `libc@>=0.2.150, <0.3`) or
/// `name@=VERSION` (exactly that version); `#` starts a comment. A bad requirement is an error
/// naming its line.
pub fn from_list(text: &str) -> Result<Vec<Want>, String> {
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let l = raw.split('#').next().unwrap_or("").trim();
        if l.is_empty() {
            continue;
        }
        let (name, spec) = match l.split_once('@') {
            Some((n, v)) => (n.trim(), Some(v.trim())),
            None => (l, None),
        };
        let version = match spec {
            None | Some("") => Pick::Newest,
            Some(v) if v.starts_with('=') && !v[1..].contains([',', '<', '>', '^', '~', '*']) => {
                Pick::Exact(v[1..].trim().to_owned())
            }
            Some(v) => Pick::Req(semver::VersionReq::parse(v).map_err(|e| {
                format!(
                    "line {}: `{v}` is not a version requirement ({e}); write name, name@1.2 or name@=1.2.3",
                    i + 1
                )
            })?),
        };
        out.push(Want {
            name: name.to_owned(),
            version,
            checksum: None,
        });
    }
    Ok(out)
}

impl Want {
    /// The `--crates` line that parses back to this want (the checksum is not carried).
    pub fn to_line(&self) -> String {
        match &self.version {
            Pick::Newest => self.name.clone(),
            Pick::Req(r) => format!("{}@{r}", self.name),
            Pick::Exact(v) => format!("{}@={v}", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lockfile_registry_packages_only() {
        let lock = r#"
version = 4
[[package]]
name = "app"
version = "0.1.0"
dependencies = ["serde"]

[[package]]
name = "serde"
version = "1.0.200"
source = "registry+https://example.com/index"
checksum = "abc"

[[package]]
name = "private"
version = "0.2.0"
source = "sparse+http://127.0.0.1:8080/local/index/"

[[package]]
name = "gitdep"
version = "0.1.0"
source = "git+https://example.com/x.git#abc"
"#;
        let w = from_lockfile(lock).unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(
            w[0],
            Want {
                name: "serde".into(),
                version: Pick::Exact("1.0.200".into()),
                checksum: Some("abc".into())
            }
        );
        assert!(from_lockfile("not = [toml").is_err());
    }

    #[test]
    fn lists() {
        let w = from_list("serde\n# comment\nlibc@0.2.150\nitoa@=1.0.0  # trailing\nrand@>=0.8, <0.9\n\n").unwrap();
        assert_eq!(w.len(), 4);
        assert_eq!(w[0].version, Pick::Newest);
        assert_eq!(w[1].version, Pick::Req(semver::VersionReq::parse("0.2.150").unwrap()));
        assert_eq!(w[2].name, "itoa");
        assert_eq!(w[2].version, Pick::Exact("1.0.0".into()));
        assert_eq!(
            w[3].version,
            Pick::Req(semver::VersionReq::parse(">=0.8, <0.9").unwrap())
        );
        let e = from_list("ok\nbad@not a version\n").unwrap_err();
        assert!(e.contains("line 2"), "{e}");
    }
}
