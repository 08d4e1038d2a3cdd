//! The access-control list: which subjects may do what.
//!
//! A policy file has one rule per line, `subject, action`, where the subject is a client
//! certificate's subject (see the `auth` module) or `*` for every client, including one
//! without a certificate, and the action is one of:
//! - `produce`: Produce and ProduceStream;
//! - `consume`: Consume and ConsumeStream;
//! - `admin`: change a cluster's membership;
//! - `replicate`: be a node of the cluster: call the Raft service (`raft.v1`), and forward a
//!   produce that the node has already authorized for its own client.
//!
//! `#` starts a comment; blank lines are skipped. With a policy set, everything it does not
//! allow is denied.
//!
//! ```text
//! # producers
//! ingest, produce
//! # everyone may read
//! *, consume
//! # the cluster's nodes (their certificates' subjects)
//! node-1.ringlog, replicate
//! ```

use std::{
    collections::HashSet,
    fmt,
    path::{Path, PathBuf},
};

/// What a client asks to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Append records: `Produce` and `ProduceStream`.
    Produce,
    /// Read records: `Consume` and `ConsumeStream`.
    Consume,
    /// Change a cluster's membership: `AddNode` and `RemoveNode` of `ringlog.admin.v1`.
    Admin,
    /// Be a node of the cluster: the Raft service (`raft.v1`), and produce requests forwarded
    /// by a follower.
    Replicate,
}

impl Action {
    /// The action's name in policy files and messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Produce => "produce",
            Action::Consume => "consume",
            Action::Admin => "admin",
            Action::Replicate => "replicate",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parsed policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Acl {
    /// `(subject, action)` pairs; `None` is the `*` wildcard.
    rules: HashSet<(Option<String>, Action)>,
}

/// A policy file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AclError {
    /// The file cannot be read.
    #[error("acl file {}: {reason}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why it cannot be read.
        reason: String,
    },
    /// A line is not a rule.
    #[error("acl file {}: line {line}: {reason}", path.display())]
    Line {
        /// The file (empty when parsing text).
        path: PathBuf,
        /// The 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}

impl Acl {
    /// Reads and parses a policy file.
    pub fn from_file(path: &Path) -> Result<Acl, AclError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| AclError::Read { path: path.to_owned(), reason: e.to_string() })?;
        Acl::parse(&text).map_err(|e| match e {
            AclError::Line { line, reason, .. } => AclError::Line { path: path.to_owned(), line, reason },
            other => other,
        })
    }

    /// Parses policy text; the first bad line is reported with its number.
    pub fn parse(text: &str) -> Result<Acl, AclError> {
        let mut rules = HashSet::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let fail = |reason: String| AclError::Line { path: PathBuf::new(), line, reason };
            let rule = raw.split_once('#').map_or(raw, |(rule, _comment)| rule).trim();
            if rule.is_empty() {
                continue;
            }
            let fields: Vec<&str> = rule.split(',').map(str::trim).collect();
            let [subject, action] = fields[..] else {
                return Err(fail(format!("expected `subject, action`, found `{rule}`")));
            };
            if subject.is_empty() {
                return Err(fail("the subject is empty (use `*` for every client)".to_owned()));
            }
            let action = match action {
                "produce" => Action::Produce,
                "consume" => Action::Consume,
                "admin" => Action::Admin,
                "replicate" => Action::Replicate,
                other => {
                    return Err(fail(format!(
                        "unknown action `{other}` (expected `produce`, `consume`, `admin` or `replicate`)"
                    )));
                }
            };
            let subject = (subject != "*").then(|| subject.to_owned());
            rules.insert((subject, action));
        }
        Ok(Acl { rules })
    }

    /// Whether `subject` (`None` for a client without a certificate) may do `action`.
    pub fn allows(&self, subject: Option<&str>, action: Action) -> bool {
        self.rules.contains(&(None, action))
            || subject.is_some_and(|s| self.rules.contains(&(Some(s.to_owned()), action)))
    }

    /// How many rules the policy has.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether the policy has no rules (and so denies everything).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_wildcards_and_comments() {
        let acl = Acl::parse("# who may do what\n\nalice, produce  # the writer\n*, consume\n").unwrap();
        assert_eq!(acl.len(), 2);
        assert!(acl.allows(Some("alice"), Action::Produce));
        assert!(acl.allows(Some("alice"), Action::Consume));
        assert!(acl.allows(Some("bob"), Action::Consume));
        assert!(acl.allows(None, Action::Consume));
        assert!(!acl.allows(Some("bob"), Action::Produce));
        assert!(!acl.allows(None, Action::Produce));
    }

    #[test]
    fn an_empty_policy_denies_everything() {
        let acl = Acl::parse("# nothing yet\n").unwrap();
        assert!(acl.is_empty());
        assert!(!acl.allows(Some("alice"), Action::Consume));
    }

    #[test]
    fn subjects_match_exactly() {
        let acl = Acl::parse("alice, produce").unwrap();
        assert!(!acl.allows(Some("Alice"), Action::Produce));
        assert!(!acl.allows(Some("alice2"), Action::Produce));
        assert!(!acl.allows(Some("*"), Action::Consume));
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("alice, produce\nbob produce\n", 2, "expected `subject, action`"),
            ("\n\n# c\nalice, write\n", 4, "unknown action `write`"),
            (" , consume", 1, "subject is empty"),
            ("a, produce, consume", 1, "expected `subject, action`"),
        ];
        for (text, line, reason) in cases {
            let error = Acl::parse(text).unwrap_err();
            let AclError::Line { line: got, reason: why, .. } = &error else { panic!("{error}") };
            assert_eq!(*got, line, "{text:?}: {error}");
            assert!(why.contains(reason), "{text:?}: {error}");
            assert!(error.to_string().contains(&format!("line {line}:")), "{error}");
        }
    }
}
