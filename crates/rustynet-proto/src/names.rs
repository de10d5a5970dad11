//! Host label and DNS name rules shared by control, daemon and CLI, so a name
//! that one component accepts is accepted by all of them.

/// Longest DNS label (RFC 1035).
pub const MAX_LABEL: usize = 63;
/// Longest DNS name in presentation form without the trailing dot.
pub const MAX_NAME: usize = 253;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty name or label.
    #[error("name is empty")]
    Empty,
    /// Too long.
    #[error("name is longer than {0} characters")]
    TooLong(usize),
    /// A character outside `a-z`, `0-9`, `-`.
    #[error("character {0:?} is not allowed (use a-z, 0-9 and '-')")]
    Char(char),
    /// A label starts or ends with '-'.
    #[error("a label may not start or end with '-'")]
    Hyphen,
}

/// Validates a host label as given by a user (`--hostname`) and returns its
/// canonical (lowercase) form. Leaves room for a `-NNN` duplicate suffix.
pub fn normalize_hostname(raw: &str) -> Result<String, NameError> {
    let label = raw.trim().to_ascii_lowercase();
    validate_label(&label, MAX_LABEL - 4)?;
    Ok(label)
}

/// Checks one DNS label (lowercase letters, digits, inner hyphens).
pub fn validate_label(label: &str, max: usize) -> Result<(), NameError> {
    if label.is_empty() {
        return Err(NameError::Empty);
    }
    if label.len() > max {
        return Err(NameError::TooLong(max));
    }
    if let Some(c) = label
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-'))
    {
        return Err(NameError::Char(c));
    }
    if label.starts_with('-') || label.ends_with('-') {
        return Err(NameError::Hyphen);
    }
    Ok(())
}

/// Checks a dotted DNS name (lowercase, no trailing dot).
pub fn validate_dns_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME {
        return Err(NameError::TooLong(MAX_NAME));
    }
    name.split('.')
        .try_for_each(|l| validate_label(l, MAX_LABEL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostnames() {
        assert_eq!(normalize_hostname(" Laptop-1 ").unwrap(), "laptop-1");
        assert_eq!(normalize_hostname(""), Err(NameError::Empty));
        assert_eq!(normalize_hostname("a_b"), Err(NameError::Char('_')));
        assert_eq!(normalize_hostname("-a"), Err(NameError::Hyphen));
        assert_eq!(normalize_hostname("a.b"), Err(NameError::Char('.')));
        assert!(normalize_hostname(&"a".repeat(60)).is_err());
    }

    #[test]
    fn dns_names() {
        assert!(validate_dns_name("host-2.rustynet.internal").is_ok());
        assert!(validate_dns_name("host..internal").is_err());
        assert!(validate_dns_name("host.internal.").is_err());
        assert!(validate_dns_name("Host.internal").is_err());
    }
}
