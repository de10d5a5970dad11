//! Input validation shared by every effect.
//!
//! No shell is ever involved, but names still end up inside nft JSON, netlink
//! attributes and file paths; rejecting anything unusual up front keeps a
//! hostile or corrupted value from changing the meaning of what we apply
//! (an interface name ending in `*` is a wildcard to nft, a `/` escapes a
//! sysctl path, a newline forges a resolv.conf line).

/// Why a name was refused. Carries the offending value (names are never
/// secrets) so the operator sees what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidName {
    /// The name is empty.
    #[error("{what} is empty")]
    Empty {
        /// What kind of name it was.
        what: &'static str,
    },
    /// The name is longer than the kernel or nft accepts.
    #[error("{what} {value:?} is longer than {max} bytes")]
    TooLong {
        /// What kind of name it was.
        what: &'static str,
        /// The refused value.
        value: String,
        /// The limit in bytes.
        max: usize,
    },
    /// The name contains a character outside the allowed set.
    #[error("{what} {value:?} contains a forbidden character {ch:?}")]
    BadChar {
        /// What kind of name it was.
        what: &'static str,
        /// The refused value.
        value: String,
        /// The first forbidden character.
        ch: char,
    },
    /// The name has a forbidden shape (starts with a digit, is `.`, ...).
    #[error("{what} {value:?} is not allowed: {reason}")]
    BadShape {
        /// What kind of name it was.
        what: &'static str,
        /// The refused value.
        value: String,
        /// Why.
        reason: &'static str,
    },
}

/// Linux `IFNAMSIZ - 1`.
const IFNAME_MAX: usize = 15;
/// Generous but bounded; nft allows 256 but nothing we create needs more.
const NFT_NAME_MAX: usize = 64;
/// nft's own limit for rule comments (`NFT_USERDATA_MAXLEN` allows more, the
/// parser stops at 128).
const COMMENT_MAX: usize = 128;

/// Checks an interface name: 1–15 bytes of `[A-Za-z0-9_.-]`, not `.`/`..`.
///
/// Stricter than the kernel (which allows most bytes) on purpose: `*` would
/// turn an nft `iifname` match into a prefix wildcard, and quotes, `/`, `:`
/// or whitespace have no business in interfaces Rustynet manages or matches.
pub fn validate_ifname(name: &str) -> Result<(), InvalidName> {
    const WHAT: &str = "interface name";
    if name.is_empty() {
        return Err(InvalidName::Empty { what: WHAT });
    }
    if name.len() > IFNAME_MAX {
        return Err(InvalidName::TooLong {
            what: WHAT,
            value: name.to_owned(),
            max: IFNAME_MAX,
        });
    }
    if name == "." || name == ".." {
        return Err(InvalidName::BadShape {
            what: WHAT,
            value: name.to_owned(),
            reason: "reserved name",
        });
    }
    if let Some(ch) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(InvalidName::BadChar {
            what: WHAT,
            value: name.to_owned(),
            ch,
        });
    }
    Ok(())
}

/// Checks an nftables table or chain name: starts with a letter, then
/// `[A-Za-z0-9_-]`, at most 64 bytes.
pub fn validate_nft_name(what: &'static str, name: &str) -> Result<(), InvalidName> {
    if name.is_empty() {
        return Err(InvalidName::Empty { what });
    }
    if name.len() > NFT_NAME_MAX {
        return Err(InvalidName::TooLong {
            what,
            value: name.to_owned(),
            max: NFT_NAME_MAX,
        });
    }
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return Err(InvalidName::BadShape {
            what,
            value: name.to_owned(),
            reason: "must start with a letter",
        });
    }
    if let Some(ch) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-')))
    {
        return Err(InvalidName::BadChar {
            what,
            value: name.to_owned(),
            ch,
        });
    }
    Ok(())
}

/// Checks an nft rule comment: printable ASCII without `"` or `\`, at most
/// 128 bytes. Comments show up in `nft list ruleset` output that operators
/// paste around, so they must not be able to forge extra lines or quoting.
pub fn validate_comment(comment: &str) -> Result<(), InvalidName> {
    const WHAT: &str = "rule comment";
    if comment.is_empty() {
        return Err(InvalidName::Empty { what: WHAT });
    }
    if comment.len() > COMMENT_MAX {
        return Err(InvalidName::TooLong {
            what: WHAT,
            value: comment.to_owned(),
            max: COMMENT_MAX,
        });
    }
    if let Some(ch) = comment
        .chars()
        .find(|c| !(c.is_ascii_graphic() || *c == ' ') || matches!(c, '"' | '\\'))
    {
        return Err(InvalidName::BadChar {
            what: WHAT,
            value: comment.to_owned(),
            ch,
        });
    }
    Ok(())
}

/// Checks a DNS search domain for resolv.conf: labels of `[A-Za-z0-9-]`
/// (plus `_`), separated by single dots, optional trailing dot, at most 253
/// bytes.
pub(crate) fn validate_search_domain(domain: &str) -> Result<(), InvalidName> {
    const WHAT: &str = "search domain";
    if domain.is_empty() {
        return Err(InvalidName::Empty { what: WHAT });
    }
    if domain.len() > 253 {
        return Err(InvalidName::TooLong {
            what: WHAT,
            value: domain.to_owned(),
            max: 253,
        });
    }
    if let Some(ch) = domain
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
    {
        return Err(InvalidName::BadChar {
            what: WHAT,
            value: domain.to_owned(),
            ch,
        });
    }
    let trimmed = domain.strip_suffix('.').unwrap_or(domain);
    if trimmed
        .split('.')
        .any(|label| label.is_empty() || label.len() > 63)
    {
        return Err(InvalidName::BadShape {
            what: WHAT,
            value: domain.to_owned(),
            reason: "empty or over-long label",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interface_names() {
        for ok in ["rn0", "eth0.100", "veth-a_b", "x", "abcdefghijklmno"] {
            assert_eq!(validate_ifname(ok), Ok(()), "{ok}");
        }
        assert!(matches!(
            validate_ifname(""),
            Err(InvalidName::Empty { .. })
        ));
        assert!(matches!(
            validate_ifname("abcdefghijklmnop"),
            Err(InvalidName::TooLong { .. })
        ));
        assert!(matches!(
            validate_ifname(".."),
            Err(InvalidName::BadShape { .. })
        ));
        for bad in ["eth*", "a b", "a/b", "a\"b", "a\nb", "a:1", "é"] {
            assert!(
                matches!(validate_ifname(bad), Err(InvalidName::BadChar { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn nft_names() {
        assert_eq!(validate_nft_name("chain name", "killswitch_out-4"), Ok(()));
        assert!(matches!(
            validate_nft_name("chain name", "4out"),
            Err(InvalidName::BadShape { .. })
        ));
        assert!(matches!(
            validate_nft_name("chain name", "out;flush"),
            Err(InvalidName::BadChar { .. })
        ));
        assert!(matches!(
            validate_nft_name("chain name", ""),
            Err(InvalidName::Empty { .. })
        ));
        let long = "a".repeat(65);
        assert!(matches!(
            validate_nft_name("chain name", &long),
            Err(InvalidName::TooLong { .. })
        ));
    }

    #[test]
    fn comments() {
        assert_eq!(validate_comment("allow tunnel udp (gen 7)"), Ok(()));
        for bad in ["a\"b", "a\nb", "a\\b", "tab\there"] {
            assert!(
                matches!(validate_comment(bad), Err(InvalidName::BadChar { .. })),
                "{bad:?}"
            );
        }
        assert!(matches!(
            validate_comment(&"x".repeat(129)),
            Err(InvalidName::TooLong { .. })
        ));
    }

    #[test]
    fn search_domains() {
        assert_eq!(validate_search_domain("mesh.rustynet.internal"), Ok(()));
        assert_eq!(validate_search_domain("example.org."), Ok(()));
        assert!(validate_search_domain("a..b").is_err());
        assert!(validate_search_domain("a b").is_err());
        assert!(validate_search_domain("evil\nnameserver 1.2.3.4").is_err());
    }
}
