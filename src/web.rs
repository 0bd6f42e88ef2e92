//! The web interface's HTML: pure functions from what the registry layer answered to pages
//! (maud templates, compiled in), the README renderer (`markdown.rs`) and the two static
//! assets. No I/O and no decisions here: `http/pages.rs` checks sessions and CSRF, calls the
//! registry layer and sends what these functions render.
//!
//! Every value that comes from a publisher or a client is escaped by maud; the only raw HTML
//! is a README after [`markdown::render`] sanitised it. Every read page works without
//! JavaScript; the script only reveals and drives the copy buttons.

pub mod markdown;
pub mod pages;
pub mod setup;

/// The stylesheet, served at `/-/static/app.css`.
pub const APP_CSS: &str = include_str!("web/app.css");
/// The copy buttons, served at `/-/static/app.js` (the only script; no inline script).
pub const APP_JS: &str = include_str!("web/app.js");

/// A short hash of the two assets, put into their URLs (`?v=`): a new release's stylesheet
/// or script is a new URL, so browsers may keep each version as long as they like.
pub fn asset_version() -> &'static str {
    static V: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    V.get_or_init(|| {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(APP_CSS);
        h.update(APP_JS);
        hex::encode(&h.finalize()[..6])
    })
}

/// Who is looking at a page.
#[derive(Debug, Clone, Copy)]
pub struct Viewer<'a> {
    pub user: &'a str,
    pub admin: bool,
    /// The session's CSRF token, put into every form that posts.
    pub csrf: &'a str,
}
