//! What a queue may be called: one rule, checked wherever a name enters.
//!
//! River's rule, minus its stricter 64-character client limit: lowercase
//! letters, digits, `_` and `-`. Lowercase only, so `Mail` and `mail` cannot
//! be two queues that look like one; a letter or digit first, so a name is
//! never read as a flag on the command line (`offload queue pause -x`).

/// The longest queue name, in characters.
pub const MAX_QUEUE_NAME_LEN: usize = 128;

/// How much of a bad name an error shows.
const SHOWN_CHARS: usize = 40;

/// Checks that `name` can name a queue: 1 to [`MAX_QUEUE_NAME_LEN`]
/// characters of `a-z`, `0-9`, `_` and `-`, starting with a letter or digit.
///
/// Every enqueue checks the queue of each job it inserts, so a job can
/// never sit on a queue no worker can be configured for.
///
/// ```
/// use offload::check_queue_name;
///
/// assert!(check_queue_name("mail").is_ok());
/// assert!(check_queue_name("tenant-42_low").is_ok());
/// let error = check_queue_name("has space").unwrap_err();
/// assert_eq!(
///     error.to_string(),
///     "invalid queue name \"has space\": it contains ' '; a queue name is 1 to 128 \
///      characters of a-z, 0-9, `_` and `-`, starting with a letter or digit"
/// );
/// assert!(check_queue_name("").is_err());
/// assert!(check_queue_name("Mail").is_err());
/// assert!(check_queue_name(&"q".repeat(129)).is_err());
/// ```
pub fn check_queue_name(name: &str) -> Result<(), InvalidQueueName> {
    let problem = if name.is_empty() {
        "it is empty".to_owned()
    } else if let Some(bad) = name.chars().find(|c| !is_allowed(*c)) {
        format!("it contains {bad:?}")
    } else if name.len() > MAX_QUEUE_NAME_LEN {
        // Only ASCII is left, so bytes are characters.
        format!("it is {} characters long", name.len())
    } else if let Some(first @ ('_' | '-')) = name.chars().next() {
        format!("it starts with {first:?}")
    } else {
        return Ok(());
    };
    Err(InvalidQueueName {
        shown: shown(name),
        problem,
    })
}

fn is_allowed(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-'
}

/// The first [`SHOWN_CHARS`] characters of `name`, marked when cut.
fn shown(name: &str) -> String {
    match name.char_indices().nth(SHOWN_CHARS) {
        Some((end, _)) => format!("{}…", &name[..end]),
        None => name.to_owned(),
    }
}

/// A queue name that breaks the rule of [`check_queue_name`]. Its message
/// shows the name (cut to its first 40 characters), what is wrong with it,
/// and the rule.
///
/// ```
/// let error = offload::check_queue_name(&"q".repeat(300)).unwrap_err();
/// let message = error.to_string();
/// assert!(message.contains("it is 300 characters long"));
/// assert!(message.len() < 300, "the name is cut: {message}");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid queue name {shown:?}: {problem}; a queue name is 1 to {MAX_QUEUE_NAME_LEN} \
     characters of a-z, 0-9, `_` and `-`, starting with a letter or digit"
)]
pub struct InvalidQueueName {
    shown: String,
    problem: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(name: &str) -> String {
        check_queue_name(name).unwrap_err().problem
    }

    #[test]
    fn each_broken_rule_is_named() {
        assert_eq!(problem(""), "it is empty");
        assert_eq!(problem("has space"), "it contains ' '");
        assert_eq!(problem("Mail"), "it contains 'M'");
        assert_eq!(problem("mail.eu"), "it contains '.'");
        assert_eq!(problem("tab\there"), "it contains '\\t'");
        assert_eq!(problem("-mail"), "it starts with '-'");
        assert_eq!(problem(&"a".repeat(300)), "it is 300 characters long");
    }

    #[test]
    fn the_longest_name_and_separators_inside_are_allowed() {
        assert!(check_queue_name(&"a".repeat(MAX_QUEUE_NAME_LEN)).is_ok());
        assert!(check_queue_name("0").is_ok());
        assert!(check_queue_name("a-_b_").is_ok());
    }

    #[test]
    fn a_huge_name_is_cut_in_the_message() {
        let message = check_queue_name(&"é".repeat(10_000))
            .unwrap_err()
            .to_string();
        assert!(message.starts_with(&format!("invalid queue name \"{}…\"", "é".repeat(40))));
        assert!(message.len() < 300, "{message}");
    }
}
