//! What the node learned when it enrolled, as kept in the sealed state.
//!
//! The control URLs are a list: replicas of one control server (one
//! database, one CA, one signing key), the first preferred. The file keeps
//! `control_url` (the first) beside `control_urls` (all of them): a state
//! written before the list existed, with `control_url` alone, loads as a
//! list of one, and an older daemon reading a newer file still finds the
//! preferred URL where it looks for it.

use std::net::SocketAddr;

use rustynet_proto::{NodeId, SigningPublicKey};
use serde::{Deserialize, Serialize};

/// What the node learned when it enrolled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "EnrollmentFile", into = "EnrollmentFile")]
pub struct Enrollment {
    /// Every control URL, `https://HOST:PORT`, in order of preference
    /// (never empty).
    pub control_urls: Vec<String>,
    /// The pinned CA (one for all the URLs: replicas share it).
    pub ca_pem: String,
    /// This node's id.
    pub node_id: NodeId,
    /// The pinned map-signing key.
    pub control_signing_key: SigningPublicKey,
    /// Assigned host label.
    pub hostname: String,
    /// What the preferred (first) control host resolved to when the node
    /// connected (used first, so a hostile network's DNS later cannot
    /// steer the control connection; TLS with the pinned CA guards it
    /// either way). The other URLs are resolved when they are used.
    pub control_addrs: Vec<SocketAddr>,
    /// Fingerprint of the pre-auth key the node enrolled (or last renewed)
    /// with, never the key: a later `up --auth-key` with another key
    /// renews the node. Absent in state written before it was kept.
    pub auth_key_fingerprint: Option<String>,
    /// Control refused this node (expired or removed); cleared once control
    /// accepts it again. Kept across restarts so `up --auth-key` enrolls
    /// anew instead of reconnecting to a refusal.
    pub refused: bool,
}

impl Enrollment {
    /// The preferred control URL.
    pub fn control_url(&self) -> &str {
        self.control_urls.first().map_or("", String::as_str)
    }
}

/// [`Enrollment`] as written in the state file.
#[derive(Serialize, Deserialize)]
struct EnrollmentFile {
    /// The preferred URL (the only one in state of older versions).
    control_url: String,
    /// All URLs, the preferred first; absent in older state.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    control_urls: Vec<String>,
    ca_pem: String,
    node_id: NodeId,
    control_signing_key: SigningPublicKey,
    hostname: String,
    #[serde(default)]
    control_addrs: Vec<SocketAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    auth_key_fingerprint: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    refused: bool,
}

impl TryFrom<EnrollmentFile> for Enrollment {
    type Error = &'static str;

    fn try_from(f: EnrollmentFile) -> Result<Self, Self::Error> {
        let control_urls = if f.control_urls.is_empty() {
            vec![f.control_url]
        } else if f.control_urls.first() == Some(&f.control_url) {
            f.control_urls
        } else {
            return Err("control_url is not the first of control_urls");
        };
        if control_urls.iter().any(String::is_empty) {
            return Err("empty control URL");
        }
        Ok(Self {
            control_urls,
            ca_pem: f.ca_pem,
            node_id: f.node_id,
            control_signing_key: f.control_signing_key,
            hostname: f.hostname,
            control_addrs: f.control_addrs,
            auth_key_fingerprint: f.auth_key_fingerprint,
            refused: f.refused,
        })
    }
}

impl From<Enrollment> for EnrollmentFile {
    fn from(e: Enrollment) -> Self {
        let control_url = e.control_url().to_owned();
        Self {
            // A single URL is written as before: older versions read it.
            control_urls: if e.control_urls.len() > 1 {
                e.control_urls
            } else {
                vec![]
            },
            control_url,
            ca_pem: e.ca_pem,
            node_id: e.node_id,
            control_signing_key: e.control_signing_key,
            hostname: e.hostname,
            control_addrs: e.control_addrs,
            auth_key_fingerprint: e.auth_key_fingerprint,
            refused: e.refused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustynet_proto::NodeSigningKey;

    fn enrollment(urls: &[&str]) -> Enrollment {
        Enrollment {
            control_urls: urls.iter().map(|u| (*u).to_owned()).collect(),
            ca_pem: "ca".into(),
            node_id: NodeId(3),
            control_signing_key: NodeSigningKey::from_seed(&[9; 32]).public(),
            hostname: "a".into(),
            control_addrs: vec!["192.0.2.1:8443".parse().unwrap()],
            auth_key_fingerprint: None,
            refused: false,
        }
    }

    /// A state file of an older version (one `control_url`) loads as a list
    /// of one, and one URL is written the old way.
    #[test]
    fn an_old_single_url_enrollment_loads_and_is_written_alike() {
        let one = enrollment(&["https://a.example:443"]);
        let text = serde_json::to_value(&one).unwrap();
        assert_eq!(text["control_url"], "https://a.example:443");
        assert!(text.get("control_urls").is_none());
        // Exactly the fields a state of an older version holds.
        let mut keys: Vec<&str> = text
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "ca_pem",
                "control_addrs",
                "control_signing_key",
                "control_url",
                "hostname",
                "node_id"
            ]
        );
        let old = text.to_string();
        let loaded: Enrollment = serde_json::from_str(&old).unwrap();
        assert_eq!(loaded, one);
        assert_eq!(loaded.control_url(), "https://a.example:443");
    }

    /// Several URLs round-trip in order, the first also as `control_url`.
    #[test]
    fn a_list_of_urls_round_trips_with_the_first_kept_apart() {
        let two = enrollment(&["https://a.example:443", "https://b.example:8443"]);
        let text = serde_json::to_value(&two).unwrap();
        assert_eq!(text["control_url"], "https://a.example:443");
        assert_eq!(
            text["control_urls"],
            serde_json::json!(["https://a.example:443", "https://b.example:8443"])
        );
        let back: Enrollment = serde_json::from_value(text).unwrap();
        assert_eq!(back, two);
    }

    /// A file whose two fields disagree, or that names an empty URL, does
    /// not load (the state is then untrusted, never half-read).
    #[test]
    fn inconsistent_urls_are_refused() {
        let two = enrollment(&["https://a.example:443", "https://b.example:8443"]);
        let mut text = serde_json::to_value(&two).unwrap();
        text["control_url"] = "https://c.example:443".into();
        assert!(serde_json::from_value::<Enrollment>(text.clone()).is_err());
        text["control_url"] = "".into();
        text.as_object_mut().unwrap().remove("control_urls");
        assert!(serde_json::from_value::<Enrollment>(text).is_err());
    }
}
