//! `https://HOST:PORT` parsing (the only URL form control uses).

use std::fmt;

use crate::ClientError;

/// A parsed control URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlUrl {
    /// Host name or IP address (no brackets).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl ControlUrl {
    /// Parses `https://HOST:PORT` (IPv6 hosts in brackets), optional trailing `/`.
    pub fn parse(text: &str) -> Result<Self, ClientError> {
        let bad = || ClientError::Url(text.to_owned());
        let rest = text.strip_prefix("https://").ok_or_else(bad)?;
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        let (host, port) = if let Some(inner) = rest.strip_prefix('[') {
            let (host, after) = inner.split_once(']').ok_or_else(bad)?;
            (host, after.strip_prefix(':').ok_or_else(bad)?)
        } else {
            rest.rsplit_once(':').ok_or_else(bad)?
        };
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c));
        if !host_ok || port == 0 {
            return Err(bad());
        }
        Ok(Self {
            host: host.to_owned(),
            port,
        })
    }

    /// `HOST:PORT` for the Host header.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for ControlUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "https://{}", self.authority())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        assert_eq!(
            ControlUrl::parse("https://127.0.0.1:8443").unwrap(),
            ControlUrl {
                host: "127.0.0.1".into(),
                port: 8443
            }
        );
        assert_eq!(ControlUrl::parse("https://[::1]:9/").unwrap().host, "::1");
        assert_eq!(
            ControlUrl::parse("https://ctl.example:1")
                .unwrap()
                .authority(),
            "ctl.example:1"
        );
        for bad in [
            "http://a:1",
            "https://a",
            "https://a:0",
            "https://:1",
            "https://a b:1",
            "https://a:x",
        ] {
            assert!(ControlUrl::parse(bad).is_err(), "{bad}");
        }
    }
}
