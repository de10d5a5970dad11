//! Why a policy document was refused.
//!
//! Every error names where the problem is, so an admin running
//! `rustynet-control policy set FILE` can fix it without guessing: JSON shape
//! problems carry a line and column, semantic ones a path such as
//! `acls[2].dst[0]`.

/// A policy document that cannot be used. Refusing the whole document is the
/// only safe answer: a half-understood policy could grant more than intended.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The input is larger than [`crate::MAX_POLICY_BYTES`]; refused before parsing.
    #[error("policy is {size} bytes, limit is {limit}")]
    TooLarge {
        /// Size of the input in bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The text is not valid JSON or does not have the policy's shape
    /// (unknown field, wrong type, duplicate key, missing field).
    #[error("policy JSON, line {line} column {column}: {message}")]
    Json {
        /// 1-based line of the problem.
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What serde found wrong.
        message: String,
    },
    /// A value is well-formed JSON but not an acceptable policy value.
    #[error("{path}: {reason}")]
    Invalid {
        /// Where, e.g. `acls[2].dst[0]` or `groups["group:staff"][1]`.
        path: String,
        /// What is wrong with it.
        reason: String,
    },
}

impl PolicyError {
    /// An [`PolicyError::Invalid`] at `path`.
    pub(crate) fn invalid(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self::Invalid {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// Converts a serde_json error, keeping its position apart from its message.
    pub(crate) fn from_json(err: &serde_json::Error) -> Self {
        let (line, column) = (err.line(), err.column());
        let text = err.to_string();
        let suffix = format!(" at line {line} column {column}");
        let message = text.strip_suffix(&suffix).unwrap_or(&text).to_owned();
        Self::Json {
            line,
            column,
            message,
        }
    }
}
