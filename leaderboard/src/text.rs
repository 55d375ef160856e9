//! What the leaderboard accepts as a name or a line of text: ids are safe slugs (they become
//! URL path segments and CSV cells), and text carries no control or bidirectional formatting
//! characters (a BEL or ESC in a roster name would reach a terminal; a right-to-left override
//! would make a page or an export show another name than the stored one).

/// An id (cohort, student): 1 to 64 ASCII letters, digits, `-`, `_` or `.`, starting with a
/// letter or a digit, and never `..` inside (so never `.`, `..`, `-A1` or a path).
pub fn slug_ok(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id.as_bytes()[0].is_ascii_alphanumeric()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        && !id.contains("..")
}

/// What a refused slug is told.
pub const SLUG_RULE: &str =
    "1 to 64 letters, digits, '-', '_' or '.', starting with a letter or a digit, no '..'";

/// A character that changes how text around it is shown rather than being shown: Unicode's
/// bidirectional controls (embeddings, overrides, isolates, marks) and the invisible ones that
/// hide in names (zero-width space, joiners, word joiner, BOM).
pub fn formatting(c: char) -> bool {
    matches!(
        c,
        '\u{061C}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2069}'
            | '\u{FEFF}'
    )
}

/// Text of at most `max` bytes with no control or formatting character.
pub fn plain_ok(text: &str, max: usize) -> bool {
    text.len() <= max && !text.chars().any(|c| c.is_control() || formatting(c))
}

/// What refused text is told.
pub fn plain_rule(max: usize) -> String {
    format!("at most {max} bytes, no control or bidirectional formatting characters")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_slugs_and_text_is_plain() {
        for ok in [
            "ada",
            "a",
            "ada.lovelace",
            "perf-2026_b",
            "A1",
            &"x".repeat(64),
        ] {
            assert!(slug_ok(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "-A1",
            "_x",
            ".hidden",
            "a..b",
            "a/b",
            "a b",
            "é",
            &"x".repeat(65),
        ] {
            assert!(!slug_ok(bad), "{bad:?}");
        }
        assert!(plain_ok("Ada Lovelace, Zürich 学生", 200));
        for bad in [
            "bell\u{7}",
            "esc\u{1b}[31m",
            "tab\t",
            "nl\n",
            "rlo\u{202E}gnp.exe",
            "lri\u{2066}x",
            "zw\u{200B}sp",
            "bom\u{FEFF}",
        ] {
            assert!(!plain_ok(bad, 200), "{bad:?}");
        }
        assert!(!plain_ok(&"x".repeat(201), 200));
    }
}
