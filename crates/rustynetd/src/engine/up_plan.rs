//! What `up` must do: reconnect, renew the node's keys, or enroll anew.
//!
//! Decided from what the node holds (its enrollment, whether control
//! refused it, whether its state failed its integrity check, whether it is
//! failing closed) and what was asked, with no effects, so every case is a
//! unit test. The bug this replaces compared control URLs as exact strings
//! and ignored a new pre-auth key on a node control had expired: `up
//! --auth-key NEW` answered "up" and the node stayed fail-closed.

use sha2::{Digest as _, Sha256};

/// Most control URLs a node keeps (replicas of one control server).
pub const MAX_CONTROL_URLS: usize = 8;

/// The node's enrollment as saved.
#[derive(Debug, Clone, Copy)]
pub struct Saved<'a> {
    /// Control URLs as saved, preferred first (normalised again before
    /// comparing: state written before normalisation holds it as typed).
    pub control_urls: &'a [String],
    /// The pinned CA.
    pub ca_pem: &'a str,
    /// [`auth_key_fingerprint`] of the key it enrolled (or last renewed)
    /// with; absent in state written before it was kept.
    pub auth_key_fingerprint: Option<&'a str>,
    /// Control refused this node (expired by an administrator, keys
    /// expired, or removed) and has not accepted it since.
    pub refused: bool,
}

/// What the node's condition is now.
#[derive(Debug, Clone, Copy, Default)]
pub struct Condition {
    /// The saved state failed its integrity check.
    pub integrity_failed: bool,
    /// The dataplane is failing closed.
    pub fail_closed: bool,
}

/// What `up` was asked.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    /// `--control`: one URL or several, comma-separated (replicas of one
    /// control server, preferred first); empty for "the saved ones".
    pub control_url: &'a str,
    /// `--ca-cert`'s PEM; empty for "the saved one".
    pub ca_pem: &'a str,
    /// [`auth_key_fingerprint`] of `--auth-key`, when one was given.
    pub auth_key_fingerprint: Option<&'a str>,
    /// `--force-reauth`.
    pub force_reauth: bool,
}

/// The action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Enrolled here and nothing asks for more: connect with the saved
    /// enrollment and keys (a pre-auth key given is not used).
    Reconnect,
    /// Same node, name and address, new keys (signed by the current key).
    Renew,
    /// A new identity with fresh keys.
    Enroll,
}

/// The decision: the action and the control server and CA it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// What to do.
    pub action: Action,
    /// Normalised control URLs, preferred first (never empty).
    pub control_urls: Vec<String>,
    /// CA PEM to pin.
    pub ca_pem: String,
}

/// Why `up` cannot go ahead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Bare `up` on a node that never enrolled.
    #[error(
        "not enrolled: run `rustynet up --control https://HOST:PORT --ca-cert FILE --auth-key KEY`"
    )]
    NotEnrolled,
    /// A control URL does not parse, or the list is malformed.
    #[error("--control {url}: {reason}")]
    BadUrl {
        /// The entry as typed.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// More URLs than [`MAX_CONTROL_URLS`].
    #[error("--control lists {0} URLs; at most {MAX_CONTROL_URLS} are kept")]
    TooManyUrls(usize),
    /// A control server other than the saved one without its CA.
    #[error("--ca-cert is required with a control server this node is not enrolled with")]
    NeedsCa,
    /// Enrolling or renewing needs a pre-auth key.
    #[error("{0}")]
    NeedsAuthKey(&'static str),
    /// Control refused the node and no pre-auth key was given.
    #[error(
        "control refused this node (expired or removed): enroll again with `rustynet up --auth-key KEY`, or, if only its keys expired, renew them with `rustynet up --force-reauth --auth-key KEY`"
    )]
    Refused,
}

/// A stable, non-secret fingerprint of a pre-auth key: enough to tell a
/// new key from the one the node enrolled with, useless to recover it
/// (pre-auth keys are long random tokens; the hash is domain-separated).
pub fn auth_key_fingerprint(key: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"rustynet pre-auth key fingerprint v1\0")
        .chain_update(key.as_bytes())
        .finalize();
    digest[..16].iter().map(|b| format!("{b:02x}")).collect()
}

/// `--control`'s list: every entry normalised, none empty or repeated,
/// at most [`MAX_CONTROL_URLS`].
pub fn parse_control_urls(
    text: &str,
    normalize: impl Fn(&str) -> Result<String, String>,
) -> Result<Vec<String>, Refusal> {
    let mut urls: Vec<String> = Vec::new();
    for entry in text.split(',').map(str::trim) {
        let bad = |reason: String| Refusal::BadUrl {
            url: entry.to_owned(),
            reason,
        };
        if entry.is_empty() {
            return Err(Refusal::BadUrl {
                url: text.to_owned(),
                reason: "an entry of the list is empty".into(),
            });
        }
        let url = normalize(entry).map_err(bad)?;
        if urls.contains(&url) {
            return Err(bad(format!("{url} is listed twice")));
        }
        urls.push(url);
    }
    if urls.len() > MAX_CONTROL_URLS {
        return Err(Refusal::TooManyUrls(urls.len()));
    }
    Ok(urls)
}

/// Decides `up`. `normalize` is the control URL normaliser
/// (`ControlUrl::normalize`, its error as text), passed in to keep this
/// free of the client.
///
/// The asked URLs name the control server the node is enrolled with when
/// they share a URL with the saved ones (replicas are added or dropped
/// without enrolling again; the pinned CA and signing key are the trust,
/// not the URLs); the plan then carries the asked list.
pub fn decide(
    saved: Option<Saved<'_>>,
    now: Condition,
    ask: Ask<'_>,
    normalize: impl Fn(&str) -> Result<String, String>,
) -> Result<Plan, Refusal> {
    let saved_urls: Vec<String> = saved
        .map(|s| {
            s.control_urls
                .iter()
                .filter_map(|u| normalize(u).ok())
                .collect()
        })
        .unwrap_or_default();
    let control_urls = if ask.control_url.is_empty() {
        if saved_urls.is_empty() {
            return Err(Refusal::NotEnrolled);
        }
        saved_urls.clone()
    } else {
        parse_control_urls(ask.control_url, &normalize)?
    };
    let same_control = control_urls.iter().any(|u| saved_urls.contains(u));
    let ca_pem = match (ask.ca_pem.is_empty(), saved) {
        (false, _) => ask.ca_pem.to_owned(),
        (true, Some(s)) if same_control => s.ca_pem.to_owned(),
        (true, _) => return Err(Refusal::NeedsCa),
    };
    let same_ca = saved.is_some_and(|s| s.ca_pem.trim() == ca_pem.trim());
    let key = ask.auth_key_fingerprint;
    let action = match saved {
        Some(s) if same_control && same_ca && !now.integrity_failed => {
            // A key other than the one the node enrolled with renews it.
            // When that is unknown (older state), a key given to a node that
            // is failing closed does: the operator is asking to fix it.
            let new_key = match (key, s.auth_key_fingerprint) {
                (Some(k), Some(old)) => k != old,
                (Some(_), None) => now.fail_closed,
                (None, _) => false,
            };
            if ask.force_reauth {
                Action::Renew
            } else if s.refused {
                // Control's own words for an expired node: "enroll again"
                // (renewal, for keys that merely expired, is --force-reauth).
                if key.is_none() {
                    return Err(Refusal::Refused);
                }
                Action::Enroll
            } else if new_key {
                Action::Renew
            } else {
                Action::Reconnect
            }
        }
        _ => Action::Enroll,
    };
    if action != Action::Reconnect && key.is_none() {
        return Err(Refusal::NeedsAuthKey(if ask.force_reauth {
            "--force-reauth needs --auth-key (a pre-auth key of the node's user)"
        } else {
            "not enrolled with this control server: --auth-key is required"
        }));
    }
    Ok(Plan {
        action,
        control_urls,
        ca_pem,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "https://ctl.example:443";
    const CA: &str = "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n";

    fn normalize(text: &str) -> Result<String, String> {
        rustynet_control_client::ControlUrl::normalize(text).map_err(|e| e.to_string())
    }

    static SAVED_URLS: std::sync::LazyLock<Vec<String>> =
        std::sync::LazyLock::new(|| vec!["https://ctl.example".to_owned()]);

    fn saved(fp: Option<&'static str>, refused: bool) -> Saved<'static> {
        Saved {
            control_urls: &SAVED_URLS,
            ca_pem: CA,
            auth_key_fingerprint: fp,
            refused,
        }
    }

    fn ask<'a>(url: &'a str, ca: &'a str, key: Option<&'a str>) -> Ask<'a> {
        Ask {
            control_url: url,
            ca_pem: ca,
            auth_key_fingerprint: key,
            force_reauth: false,
        }
    }

    fn action(s: Option<Saved<'_>>, now: Condition, a: Ask<'_>) -> Result<Action, Refusal> {
        decide(s, now, a, normalize).map(|p| p.action)
    }

    const HEALTHY: Condition = Condition {
        integrity_failed: false,
        fail_closed: false,
    };
    const FAIL_CLOSED: Condition = Condition {
        integrity_failed: false,
        fail_closed: true,
    };

    /// The reported bug: an admin expired the node (control refused it),
    /// `up --auth-key NEW` must enroll, not answer "up" and stay closed.
    /// Spelled with or without the default port and trailing slash.
    #[test]
    fn new_key_on_a_refused_node_enrolls_whatever_the_url_spelling() {
        for url in [
            "https://ctl.example",
            "https://ctl.example/",
            "https://ctl.example:443",
            "",
        ] {
            let got = action(
                Some(saved(Some("old"), true)),
                FAIL_CLOSED,
                ask(url, "", Some("new")),
            );
            assert_eq!(got, Ok(Action::Enroll), "{url:?}");
        }
        // The same key again (reusable keys) also enrolls: control refused
        // the node, so there is nothing to reconnect to.
        assert_eq!(
            action(
                Some(saved(Some("k"), true)),
                FAIL_CLOSED,
                ask(URL, CA, Some("k"))
            ),
            Ok(Action::Enroll)
        );
    }

    #[test]
    fn refused_node_without_a_key_is_told_what_to_do() {
        assert_eq!(
            action(Some(saved(Some("k"), true)), FAIL_CLOSED, ask("", "", None)),
            Err(Refusal::Refused)
        );
    }

    #[test]
    fn force_reauth_renews_even_a_refused_node() {
        let mut a = ask("", "", Some("new"));
        a.force_reauth = true;
        assert_eq!(
            action(Some(saved(Some("old"), true)), FAIL_CLOSED, a),
            Ok(Action::Renew)
        );
        a.auth_key_fingerprint = None;
        assert!(matches!(
            action(Some(saved(None, false)), HEALTHY, a),
            Err(Refusal::NeedsAuthKey(m)) if m.contains("--force-reauth")
        ));
    }

    #[test]
    fn a_different_key_renews_and_so_does_an_unknown_one_on_a_fail_closed_node() {
        for now in [HEALTHY, FAIL_CLOSED] {
            assert_eq!(
                action(
                    Some(saved(Some("old"), false)),
                    now,
                    ask(URL, CA, Some("new"))
                ),
                Ok(Action::Renew)
            );
        }
        assert_eq!(
            action(
                Some(saved(None, false)),
                FAIL_CLOSED,
                ask("", "", Some("k"))
            ),
            Ok(Action::Renew)
        );
        // The key it enrolled with, while control is merely unreachable:
        // reconnect and keep trying (a boot script's `up` must not fail).
        assert_eq!(
            action(
                Some(saved(Some("k"), false)),
                FAIL_CLOSED,
                ask(URL, CA, Some("k"))
            ),
            Ok(Action::Reconnect)
        );
    }

    #[test]
    fn healthy_node_reconnects_with_the_same_or_no_key() {
        for key in [None, Some("k")] {
            assert_eq!(
                action(Some(saved(Some("k"), false)), HEALTHY, ask(URL, CA, key)),
                Ok(Action::Reconnect)
            );
        }
        // State from before fingerprints were kept: a key cannot be told
        // apart, so a healthy node keeps its identity.
        assert_eq!(
            action(Some(saved(None, false)), HEALTHY, ask(URL, CA, Some("k"))),
            Ok(Action::Reconnect)
        );
        // A fail-closed node without a key reconnects (it may be waiting
        // for control) rather than failing.
        assert_eq!(
            action(Some(saved(None, false)), FAIL_CLOSED, ask("", "", None)),
            Ok(Action::Reconnect)
        );
    }

    #[test]
    fn bare_up_uses_the_saved_control_and_ca() {
        let plan = decide(
            Some(saved(None, false)),
            HEALTHY,
            ask("", "", None),
            normalize,
        );
        assert_eq!(
            plan,
            Ok(Plan {
                action: Action::Reconnect,
                control_urls: vec![URL.into()],
                ca_pem: CA.into(),
            })
        );
        assert_eq!(
            action(None, HEALTHY, ask("", "", Some("k"))),
            Err(Refusal::NotEnrolled)
        );
    }

    #[test]
    fn another_control_server_needs_its_ca_and_a_key() {
        let other = "https://other.example:8443";
        assert_eq!(
            action(Some(saved(None, false)), HEALTHY, ask(other, "", Some("k"))),
            Err(Refusal::NeedsCa)
        );
        assert_eq!(
            action(Some(saved(None, false)), HEALTHY, ask(other, CA, Some("k"))),
            Ok(Action::Enroll)
        );
        assert!(matches!(
            action(Some(saved(None, false)), HEALTHY, ask(other, CA, None)),
            Err(Refusal::NeedsAuthKey(_))
        ));
        // A different CA for the same server is a new trust root: enroll.
        assert_eq!(
            action(
                Some(saved(None, false)),
                HEALTHY,
                ask(URL, "other", Some("k"))
            ),
            Ok(Action::Enroll)
        );
    }

    #[test]
    fn integrity_failure_or_no_enrollment_enrolls() {
        let broken = Condition {
            integrity_failed: true,
            fail_closed: true,
        };
        assert_eq!(
            action(
                Some(saved(Some("k"), false)),
                broken,
                ask(URL, CA, Some("k"))
            ),
            Ok(Action::Enroll)
        );
        assert_eq!(
            action(None, HEALTHY, ask(URL, CA, Some("k"))),
            Ok(Action::Enroll)
        );
        assert!(matches!(
            action(None, HEALTHY, ask(URL, CA, None)),
            Err(Refusal::NeedsAuthKey(_))
        ));
        assert!(matches!(
            action(None, HEALTHY, ask("http://ctl.example", CA, Some("k"))),
            Err(Refusal::BadUrl { .. })
        ));
    }

    #[test]
    fn fingerprints_tell_keys_apart_and_hide_them() {
        let a = auth_key_fingerprint("rnk_secret_one");
        assert_eq!(a, auth_key_fingerprint("rnk_secret_one"));
        assert_ne!(a, auth_key_fingerprint("rnk_secret_two"));
        assert_eq!(a.len(), 32);
        assert!(!a.contains("secret"));
    }

    /// Several URLs: each normalised and checked, the order kept; an empty
    /// entry, a repeat (in any spelling) or a bad URL is refused with what
    /// is wrong, and nothing else is decided.
    #[test]
    fn a_list_of_control_urls_is_checked_entry_by_entry() {
        assert_eq!(
            parse_control_urls("https://a.example, https://B.example:8443/", normalize),
            Ok(vec![
                "https://a.example:443".to_owned(),
                "https://b.example:8443".to_owned()
            ])
        );
        for (text, why) in [
            ("https://a.example,,https://b.example", "empty"),
            ("https://a.example,", "empty"),
            ("https://a.example,https://A.example:443/", "listed twice"),
            ("https://a.example,http://b.example", "scheme must be https"),
            ("https://a.example,https://b.example:0", "port"),
            ("https://a.example,https://", "host"),
        ] {
            let e = parse_control_urls(text, normalize).unwrap_err();
            assert!(matches!(e, Refusal::BadUrl { .. }), "{text}: {e}");
            assert!(e.to_string().contains(why), "{text}: {e}");
        }
        let nine: Vec<String> = (1..=9).map(|i| format!("https://c{i}.example")).collect();
        assert_eq!(
            parse_control_urls(&nine.join(","), normalize),
            Err(Refusal::TooManyUrls(9))
        );
        assert!(matches!(
            action(
                None,
                HEALTHY,
                ask("https://a.example,ftp://b", CA, Some("k"))
            ),
            Err(Refusal::BadUrl { .. })
        ));
    }

    /// Adding a replica to (or dropping one from) the saved URLs is the
    /// same control server: reconnect with the new list, no new identity.
    /// A list sharing nothing with the saved one is another server.
    #[test]
    fn replicas_added_to_the_saved_control_reconnect_with_the_new_list() {
        let plan = decide(
            Some(saved(Some("k"), false)),
            HEALTHY,
            ask("https://ctl.example,https://ctl2.example:8443", "", None),
            normalize,
        )
        .unwrap();
        assert_eq!(plan.action, Action::Reconnect);
        assert_eq!(
            plan.control_urls,
            ["https://ctl.example:443", "https://ctl2.example:8443"]
        );
        assert_eq!(plan.ca_pem, CA, "the saved CA serves every replica");
        assert_eq!(
            action(
                Some(saved(Some("k"), false)),
                HEALTHY,
                ask("https://ctl2.example,https://ctl.example", "", None)
            ),
            Ok(Action::Reconnect)
        );
        assert_eq!(
            action(
                Some(saved(Some("k"), false)),
                HEALTHY,
                ask("https://x.example,https://y.example", "", Some("k"))
            ),
            Err(Refusal::NeedsCa)
        );
    }
}
