//! The registry's `config.json`.

use serde::Serialize;

/// `config.json` as cargo reads it. `api` never ends with `/` (cargo appends `/api/v1/...`).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ConfigJson {
    pub dl: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api: Option<String>,
    #[serde(rename = "auth-required", skip_serializing_if = "std::ops::Not::not")]
    pub auth_required: bool,
}

impl ConfigJson {
    /// The config of a registry rooted at `root` (e.g. `http://host/local`): downloads go to
    /// `{root}/api/v1/crates/{crate}/{version}/download` (cargo's default when `dl` has no markers).
    pub fn for_root(root: &str, auth_required: bool) -> Self {
        let root = root.trim_end_matches('/');
        ConfigJson {
            dl: format!("{root}/api/v1/crates"),
            api: Some(root.to_owned()),
            auth_required,
        }
    }

    /// Serialised bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape() {
        let c = ConfigJson::for_root("http://127.0.0.1:8080/local/", false);
        assert_eq!(
            String::from_utf8(c.to_bytes()).unwrap(),
            r#"{"dl":"http://127.0.0.1:8080/local/api/v1/crates","api":"http://127.0.0.1:8080/local"}"#
        );
        let c = ConfigJson::for_root("http://h.example/x", true);
        assert!(String::from_utf8(c.to_bytes())
            .unwrap()
            .ends_with(r#""auth-required":true}"#));
    }
}
