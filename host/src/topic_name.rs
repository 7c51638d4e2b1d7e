//! What a Kafka topic name may be, and which names a `[topics]` pattern matches.
//!
//! A leaf: config (which checks the configured topics and patterns) and the output policy
//! (which checks what plugins ask for) both use it, and it uses neither.

use std::fmt;

/// Kafka's own limit on a topic name's length.
pub const MAX_TOPIC_LEN: usize = 249;

/// How [`check_topic_name`] describes a topic over [`MAX_TOPIC_LEN`].
pub const TOPIC_TOO_LONG: &str = "is longer than 249 characters";

/// Kafka's topic naming rules: 1 to 249 characters from `[a-zA-Z0-9._-]`, and not `.` or `..`.
pub fn check_topic_name(topic: &str) -> Result<(), &'static str> {
    if topic.is_empty() {
        return Err("is empty");
    }
    if topic.len() > MAX_TOPIC_LEN {
        return Err(TOPIC_TOO_LONG);
    }
    if topic == "." || topic == ".." {
        return Err("is `.` or `..`");
    }
    if !topic
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err("has characters outside [a-zA-Z0-9._-]");
    }
    Ok(())
}

/// A topic-name pattern: `*` matches any run of characters (also none); every other character
/// matches itself. Patterns use only `[a-zA-Z0-9._*-]`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Glob(String);

impl Glob {
    /// Checks and wraps a pattern; the error says what is wrong with it.
    pub fn new(pattern: &str) -> Result<Self, String> {
        if pattern.is_empty() {
            return Err("must not be empty".to_owned());
        }
        if !pattern
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'*'))
        {
            return Err(format!(
                "{pattern:?} has characters outside [a-zA-Z0-9._*-]"
            ));
        }
        Ok(Self(pattern.to_owned()))
    }

    /// `*`: every topic.
    pub fn any() -> Self {
        Self("*".to_owned())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the whole of `topic` matches. Backtracks only to the last `*`, so it takes at
    /// most `pattern.len() * topic.len()` steps.
    pub fn matches(&self, topic: &str) -> bool {
        let (p, t) = (self.0.as_bytes(), topic.as_bytes());
        let (mut pi, mut ti) = (0, 0);
        // After the last `*` seen: the pattern index just past it, and the topic index it
        // currently stands for the end of.
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            if pi < p.len() && p[pi] == b'*' {
                pi += 1;
                star = Some((pi, ti));
            } else if pi < p.len() && p[pi] == t[ti] {
                pi += 1;
                ti += 1;
            } else if let Some((after, from)) = star {
                // Let the `*` swallow one more character and retry.
                pi = after;
                ti = from + 1;
                star = Some((after, from + 1));
            } else {
                return false;
            }
        }
        p[pi..].iter().all(|&b| b == b'*')
    }
}

impl fmt::Display for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Glob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Glob({:?})", self.0)
    }
}

impl std::str::FromStr for Glob {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::new(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_name_rules() {
        for ok in ["a", "payments", "kube-system", "a.b_c-D9", &"x".repeat(249)] {
            assert_eq!(check_topic_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "bad topic!",
            "Not_A_Valid/Topic",
            "é",
            &"x".repeat(250),
        ] {
            assert!(check_topic_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn glob_matching() {
        let m = |p: &str, t: &str| Glob::new(p).unwrap().matches(t);
        assert!(m("*", "anything"));
        assert!(m("*", ""));
        assert!(m("prefix-*", "prefix-"));
        assert!(m("prefix-*", "prefix-abc"));
        assert!(!m("prefix-*", "prefix"));
        assert!(!m("prefix-*", "xprefix-a"));
        assert!(m("*-suffix", "a-suffix"));
        assert!(m("*-suffix", "-suffix"));
        assert!(!m("*-suffix", "a-suffixx"));
        assert!(m("a*b*c", "abc"));
        assert!(m("a*b*c", "aXXbYYc"));
        assert!(m("a*b*c", "abcbc"));
        assert!(m("a*b*c", "abcc"));
        assert!(!m("a*b*c", "acb"));
        assert!(!m("a*b*c", "abca"));
        assert!(!m("a*b*c", "ab"));
        assert!(m("exact.topic", "exact.topic"));
        assert!(!m("exact.topic", "exact.topic2"));
        assert!(!m("exact.topic", "exact"));
        assert!(!m("a.b", "aXb"), "`.` is literal");
        assert!(m("**", "x"));
        assert!(m("a**", "a"));
        // Patterns are checked.
        assert_eq!(Glob::new(""), Err("must not be empty".to_owned()));
        assert!(Glob::new("a/b").is_err());
        assert!(Glob::new("a?").is_err());
        assert!(Glob::new("[ab]").is_err());
        assert!(Glob::new("ok_A-9.*").is_ok());
        assert_eq!("ns-*".parse::<Glob>().unwrap().to_string(), "ns-*");
    }
}
