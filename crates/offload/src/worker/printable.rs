//! Job errors as they go into the log: cut like the stored copy (see
//! [`clean_error`]), so a huge message costs the log no more than the row,
//! and with control characters escaped, so a message cannot forge or break
//! log lines.

use crate::storage::clean_error;

/// `message`, fit for one log line.
pub(crate) fn printable(message: &str) -> String {
    let cleaned = clean_error(message);
    if !cleaned.chars().any(char::is_control) {
        return cleaned;
    }
    cleaned
        .chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defaults::MAX_ERROR_LEN;

    #[test]
    fn long_messages_are_cut_like_the_stored_copy() {
        let logged = printable(&"x".repeat(10 << 20));
        assert_eq!(logged, clean_error(&"x".repeat(10 << 20)));
        assert!(logged.len() < MAX_ERROR_LEN + 32);
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("a\nb\u{1b}[31m\0"), "a\\nb\\u{1b}[31m\u{FFFD}");
    }
}
