//! What text may be.
//!
//! - Every string attribute value and filter literal is put in Unicode Normalization Form C,
//!   so a composed `é` (U+00E9) and a decomposed one (`e` + U+0301) are the same value, and
//!   uniqueness (compared on the NFC form, lower-cased where the attribute is case-insensitive)
//!   cannot be dodged by spelling a name twice.
//! - Identifying names (`userName`, `externalId`, `displayName`) refuse control characters
//!   and the invisible formatting characters used to disguise text: bidirectional overrides
//!   and isolates, the byte-order mark, line and paragraph separators.

use unicode_normalization::{IsNormalized, UnicodeNormalization, is_nfc_quick};

/// `s` in Normalization Form C (no copy when it already is, as nearly all text is).
pub fn nfc(s: &str) -> std::borrow::Cow<'_, str> {
    if s.is_ascii() || is_nfc_quick(s.chars()) == IsNormalized::Yes {
        std::borrow::Cow::Borrowed(s)
    } else {
        std::borrow::Cow::Owned(s.nfc().collect())
    }
}

/// The first character a name may not contain, if any.
pub fn forbidden_in_name(s: &str) -> Option<char> {
    s.chars().find(|&c| {
        c.is_control()
            || matches!(
                c,
                '\u{061C}'
                    | '\u{200E}'
                    | '\u{200F}'
                    | '\u{202A}'..='\u{202E}'
                    | '\u{2066}'..='\u{2069}'
                    | '\u{2028}'
                    | '\u{2029}'
                    | '\u{FEFF}'
            )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn composed_and_decomposed_are_one() {
        assert_eq!(nfc("e\u{0301}mile"), "\u{e9}mile");
        assert!(matches!(nfc("émile"), std::borrow::Cow::Borrowed(_)));
        assert!(matches!(nfc("alice"), std::borrow::Cow::Borrowed(_)));
    }

    #[test]
    fn names_refuse_controls_and_disguises() {
        for bad in [
            "a\tb",
            "a\nb",
            "a\u{7}b",
            "a\u{202E}b",
            "\u{FEFF}ab",
            "a\u{2028}",
            "a\u{0}",
        ] {
            assert!(forbidden_in_name(bad).is_some(), "{bad:?}");
        }
        for good in [
            "alice@example.com",
            "Émile Zola",
            "李雷",
            "o'brien",
            "a b",
            "👩‍💻",
        ] {
            assert_eq!(forbidden_in_name(good), None, "{good:?}");
        }
    }
}
