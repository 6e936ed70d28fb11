//! CSV cells safe to open in a spreadsheet: a cell that begins with `=`, `+`, `-`, `@`, a tab
//! or a carriage return is prefixed with `'`, so it is shown as text and never run as a
//! formula (OWASP's CSV-injection guidance).

use std::borrow::Cow;

/// The cell as written to a CSV file.
pub fn cell(s: &str) -> Cow<'_, str> {
    if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        Cow::Owned(format!("'{s}"))
    } else {
        Cow::Borrowed(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formulas_become_text() {
        assert_eq!(
            cell("=HYPERLINK(\"http://x\")"),
            "'=HYPERLINK(\"http://x\")"
        );
        for s in ["+1", "-1", "@SUM(A1)", "\tx", "\rx"] {
            assert!(cell(s).starts_with('\''), "{s:?}");
        }
        assert_eq!(cell("alice@example.com"), "alice@example.com");
        assert_eq!(cell(""), "");
    }
}
