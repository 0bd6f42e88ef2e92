//! READMEs as HTML: Markdown rendered by pulldown-cmark, then sanitised by ammonia. Whoever
//! publishes writes the README, so the output keeps only ammonia's allow-list of tags and
//! attributes: no `<script>`, `<style>`, `<iframe>` or forms, no `on*=` handlers, no
//! `javascript:` or `data:` links; links get `rel="noopener noreferrer nofollow"`. The pages'
//! Content-Security-Policy forbids inline script as a second wall.

use std::sync::OnceLock;

use pulldown_cmark::{html, Options, Parser};

fn cleaner() -> &'static ammonia::Builder<'static> {
    static CLEANER: OnceLock<ammonia::Builder<'static>> = OnceLock::new();
    CLEANER.get_or_init(|| {
        let mut b = ammonia::Builder::default();
        b.url_schemes(["http", "https", "mailto"].into_iter().collect())
            .link_rel(Some("noopener noreferrer nofollow"));
        b
    })
}

/// Renders Markdown to sanitised HTML.
pub fn render(markdown: &str) -> String {
    let opts =
        Options::ENABLE_TABLES | Options::ENABLE_STRIKETHROUGH | Options::ENABLE_TASKLISTS | Options::ENABLE_FOOTNOTES;
    let mut raw = String::with_capacity(markdown.len() * 3 / 2);
    html::push_html(&mut raw, Parser::new_ext(markdown, opts));
    sanitise(&raw)
}

/// Cleans HTML with the README allow-list.
pub fn sanitise(html: &str) -> String {
    cleaner().clean(html).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_markdown() {
        let h = render("# Title\n\nSome *text* and `code`.\n\n| a | b |\n|---|---|\n| 1 | 2 |\n");
        assert!(h.contains("<h1>Title</h1>"), "{h}");
        assert!(h.contains("<em>text</em>") && h.contains("<code>code</code>"), "{h}");
        assert!(h.contains("<table>"), "{h}");
    }

    #[test]
    fn hostile_html_is_inert() {
        let h = render(concat!(
            "<script>document.title = 'pwned'</script>\n\n",
            "<img src=x onerror=\"document.title='pwned'\">\n\n",
            "[click](javascript:alert(1)) <a href=\"javascript:alert(2)\">x</a>\n\n",
            "<iframe src=\"https://example.invalid\"></iframe><style>body{display:none}</style>\n\n",
            "<a href=\"data:text/html,<script>alert(3)</script>\">d</a>\n\n",
            "<svg onload=alert(4)></svg><form action=/x><input name=a></form>\n\n",
            "[ok](https://example.invalid/page)\n",
        ));
        for bad in [
            "<script",
            "onerror",
            "javascript:",
            "<iframe",
            "<style",
            "data:",
            "onload",
            "<form",
            "<input",
            "pwned'",
        ] {
            assert!(!h.contains(bad), "`{bad}` survived: {h}");
        }
        assert!(h.contains("href=\"https://example.invalid/page\""), "{h}");
        assert!(h.contains("rel=\"noopener noreferrer nofollow\""), "{h}");
    }

    #[test]
    fn never_panics_on_odd_input() {
        for s in ["", "<", "<<<>>>", "\u{0}", "[", "```", "<a href='", "\u{202e}x"] {
            let _ = render(s);
        }
    }
}
