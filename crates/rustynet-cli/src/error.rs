//! Errors with a stable snake_case code. An error is one line on stderr:
//! `error: MESSAGE (code)`, or under `--json` one JSON object,
//! `{"error": {"code": "...", "message": "..."}}`, so scripts branch on the
//! code instead of parsing prose.

use rustynet_proto::ipc::ErrorCode;

/// An error the client itself detected, or the daemon's, with its code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct CliError {
    /// snake_case category (the daemon's [`ErrorCode`] names, plus the
    /// client's own: `daemon_unreachable`, `flags_would_be_dropped`,
    /// `timeout`, `fail_closed`, `not_found`, `invalid_argument`,
    /// `protocol`).
    pub code: String,
    /// One line (or a few) for the operator.
    pub message: String,
}

impl CliError {
    /// An error with the client's own `code`.
    pub fn new(code: &str, message: impl Into<String>) -> Self {
        Self {
            code: code.to_owned(),
            message: message.into(),
        }
    }

    /// The daemon's error.
    pub fn daemon(code: ErrorCode, message: String) -> Self {
        let code = serde_json::to_value(code)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_else(|| "internal".into());
        Self { code, message }
    }
}

/// The code and the full message of any error (`internal` when it carries
/// no [`CliError`]).
pub fn parts(err: &anyhow::Error) -> (String, String) {
    let code = err
        .chain()
        .find_map(|e| e.downcast_ref::<CliError>())
        .map_or_else(|| "internal".to_owned(), |c| c.code.clone());
    (code, format!("{err:#}"))
}

/// The text form: `error: MESSAGE (code)` (no code for `internal`).
pub fn text(err: &anyhow::Error) -> String {
    match parts(err) {
        (code, message) if code == "internal" => format!("error: {message}"),
        (code, message) => format!("error: {message} ({code})"),
    }
}

/// What `--json` prints for an error.
pub fn json(err: &anyhow::Error) -> String {
    let (code, message) = parts(err);
    serde_json::json!({ "error": { "code": code, "message": message } }).to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn daemon_codes_are_snake_case_json() {
        let err = anyhow::Error::new(CliError::daemon(
            ErrorCode::WrongState,
            "not connected".into(),
        ));
        let v: serde_json::Value = serde_json::from_str(&json(&err)).unwrap();
        assert_eq!(v["error"]["code"], "wrong_state");
        assert_eq!(v["error"]["message"], "not connected");
    }

    #[test]
    fn context_keeps_the_code_and_plain_errors_are_internal() {
        let err = anyhow::Error::new(CliError::new("timeout", "no answer")).context("up --wait");
        let (code, message) = parts(&err);
        assert_eq!(code, "timeout");
        assert_eq!(message, "up --wait: no answer");
        assert_eq!(text(&err), "error: up --wait: no answer (timeout)");
        assert_eq!(text(&anyhow::anyhow!("boom")), "error: boom");
        let v: serde_json::Value = serde_json::from_str(&json(&anyhow::anyhow!("boom"))).unwrap();
        assert_eq!(v["error"]["code"], "internal");
    }
}
