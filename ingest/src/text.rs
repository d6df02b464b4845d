//! Free text that people type and others read (names, notes, attendees):
//! shown in the dashboard, the report, alert messages and a terminal, so it
//! may hold no control character (an escape sequence would drive the
//! terminal of whoever lists it) and no explicit direction override (which
//! shows text backwards: one customer's name made to read as another's).
//! Right-to-left scripts, emoji and joiners are text like any other.

/// Longest name (customer, outcome, milestone, CSM), in characters: a name
/// of thousands hides the dashboard's columns.
pub const MAX_NAME_CHARS: usize = 200;

/// Why `text` cannot be kept, or `None`. `multiline` lets line ends and
/// tabs through (notes).
pub fn refusal(text: &str, multiline: bool) -> Option<String> {
    let bad = text.chars().find(|&c| {
        let kept = multiline && matches!(c, '\n' | '\r' | '\t');
        (c.is_control() && !kept) || fleetpulse_proto::topic::direction_override(c)
    });
    bad.map(|c| {
        format!(
            "holds {} (U+{:04X}): {}",
            if c.is_control() {
                "a control character"
            } else {
                "a direction override"
            },
            u32::from(c),
            if multiline {
                "text may hold line ends and tabs, no other control character"
            } else {
                "a name is one line of text"
            }
        )
    })
}

/// Why `name` cannot be a name (one line, at most [`MAX_NAME_CHARS`]), or
/// `None`.
pub fn name_refusal(name: &str) -> Option<String> {
    let chars = name.chars().count();
    if chars > MAX_NAME_CHARS {
        return Some(format!("{chars} characters, at most {MAX_NAME_CHARS}"));
    }
    refusal(name, false)
}

/// `text` for a terminal: control characters but line ends and tabs shown
/// as `\u{..}` escapes, so what a stored note holds cannot drive it.
pub fn for_terminal(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && !matches!(c, '\n' | '\t') {
            shown.push_str(&c.escape_unicode().to_string());
        } else {
            shown.push(c);
        }
    }
    shown
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_overrides_are_refused_and_scripts_are_not() {
        for ok in [
            "Acme Quarry",
            "Ölwerk Süd",
            "شركة",
            "出租车 🚜",
            "👨\u{200d}🔧 crew",
        ] {
            assert_eq!(name_refusal(ok), None, "{ok}");
        }
        for bad in [
            "a\u{1b}[31mred",
            "nul\0",
            "evil\u{202e}txt",
            "a\u{2066}b",
            "two\nlines",
        ] {
            assert!(name_refusal(bad).is_some(), "{bad:?}");
        }
        assert_eq!(refusal("line one\nline two\ttab", true), None);
        assert!(refusal("bell\u{7}", true).unwrap().contains("U+0007"));
        assert!(
            name_refusal(&"x".repeat(201))
                .unwrap()
                .contains("201 characters")
        );
        assert_eq!(for_terminal("a\u{1b}[31m\nb"), "a\\u{1b}[31m\nb");
    }
}
