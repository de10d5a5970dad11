//! Control URL parsing and normalisation (`https://HOST[:PORT][/]`).

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
    /// Parses an `https://` URL with the `url` crate: host names are
    /// lower-cased, the port defaults to 443, a trailing `/` is ignored;
    /// credentials, other paths, queries and fragments are refused. Two
    /// spellings of the same server parse to the same value (and the same
    /// [`fmt::Display`] form), which is what `up` compares.
    pub fn parse(text: &str) -> Result<Self, ClientError> {
        let bad = |reason: &'static str| ClientError::Url {
            url: text.to_owned(),
            reason,
        };
        let url = url::Url::parse(text).map_err(|e| {
            bad(match e {
                url::ParseError::InvalidPort => "the port must be a number from 1 to 65535",
                url::ParseError::EmptyHost => "it names no host",
                url::ParseError::RelativeUrlWithoutBase => "it is not an https:// URL",
                _ => "it is not a URL",
            })
        })?;
        if url.scheme() != "https" {
            return Err(bad(
                "the scheme must be https (control speaks TLS 1.3 only)",
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(bad("it must not carry a user name or password"));
        }
        if url.query().is_some() || url.fragment().is_some() || !matches!(url.path(), "" | "/") {
            return Err(bad("it must not have a path, query or fragment"));
        }
        let host = match url.host() {
            Some(url::Host::Domain(d)) => d.to_owned(),
            Some(url::Host::Ipv4(a)) => a.to_string(),
            Some(url::Host::Ipv6(a)) => a.to_string(),
            None => return Err(bad("it names no host")),
        };
        let host_ok = !host.is_empty()
            && host.len() <= 253
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || ".-:".contains(c));
        if !host_ok {
            return Err(bad("the host is not a valid host name or address"));
        }
        let port = url
            .port_or_known_default()
            .filter(|p| *p != 0)
            .ok_or_else(|| bad("the port must be a number from 1 to 65535"))?;
        Ok(Self { host, port })
    }

    /// The canonical text of a control URL: `https://HOST:PORT`, port
    /// always written, no trailing `/`.
    pub fn normalize(text: &str) -> Result<String, ClientError> {
        Ok(Self::parse(text)?.to_string())
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
            "https://user:pw@a:1",
            "https://a:1/api",
            "https://a:1/?x=1",
            "https://a:1/#frag",
            "https://a:0",
            "https://:1",
            "https://a b:1",
            "https://a:x",
        ] {
            assert!(ControlUrl::parse(bad).is_err(), "{bad}");
        }
    }

    /// Each refusal says what is wrong, naming the URL as typed.
    #[test]
    fn refusals_say_why() {
        for (bad, why) in [
            ("http://a:1", "scheme must be https"),
            ("ctl.example:443", "scheme must be https"),
            ("ctl.example", "not an https:// URL"),
            ("https://u:p@a:1", "user name or password"),
            ("https://a:1/api", "path, query or fragment"),
            ("https://a:0", "port must be a number"),
            ("https://a:99999", "port must be a number"),
            ("https://a:x", "port must be a number"),
            ("https://:1", "names no host"),
            ("https://a_b:1", "not a valid host"),
        ] {
            let e = ControlUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains(why) && e.contains(bad), "{bad}: {e}");
        }
    }

    /// Spellings of one server normalise to one string: the default port
    /// made explicit, a trailing `/` dropped, the host lower-cased.
    #[test]
    fn spellings_of_one_server_normalise_alike() {
        for same in [
            "https://ctl.example",
            "https://ctl.example/",
            "https://ctl.example:443",
            "https://ctl.example:443/",
            "https://CTL.Example:443",
        ] {
            assert_eq!(
                ControlUrl::normalize(same).unwrap(),
                "https://ctl.example:443",
                "{same}"
            );
        }
        assert_eq!(
            ControlUrl::normalize("https://[::1]:8443/").unwrap(),
            "https://[::1]:8443"
        );
        assert_ne!(
            ControlUrl::normalize("https://ctl.example:8443").unwrap(),
            ControlUrl::normalize("https://ctl.example").unwrap()
        );
    }
}
