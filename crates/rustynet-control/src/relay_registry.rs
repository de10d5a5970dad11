//! The relays control announces in every map: the relay embedded in
//! `serve` (`--relay-listen`), if any, then the standalone relays an admin
//! registered with `relays add` (stored in the database, by name).
//!
//! A relay is checked with the node's own rules ([`RelayInfo::check`])
//! when it is registered, and again whenever the list is assembled, so a
//! map never carries a relay its node would refuse.

use std::net::SocketAddr;
use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rustynet_proto::CertPin;
use rustynet_proto::endpoint::check_endpoint;
use rustynet_proto::netmap::{MAX_RELAY_ADDRS, MAX_RELAY_NAME, MAX_RELAYS, RelayInfo};

use crate::admin::AdminError;
use crate::datadir::DataDir;
use crate::now_unix;

/// Where `relays add` takes the relay's key pin from.
#[derive(Debug, Clone)]
pub enum PinSource {
    /// SHA-256 of the certificate's SubjectPublicKeyInfo, as 64 hex digits
    /// or base64 (`rustynet-relay init` and `pin` print base64).
    Text(String),
    /// The relay's certificate (PEM); the pin is computed from it.
    CertFile(PathBuf),
}

/// What `relays add` was given.
#[derive(Debug, Clone)]
pub struct RelaySpec {
    /// Short name shown by `status` and `ping`.
    pub name: String,
    /// TLS addresses, `IP:PORT`.
    pub addrs: Vec<String>,
    /// SNI and Host name; the first address's IP when not given.
    pub server_name: Option<String>,
    /// The key pin.
    pub pin: PinSource,
    /// Binding (STUN) addresses, `IP:PORT`.
    pub stun: Vec<String>,
}

fn invalid(message: String) -> AdminError {
    AdminError::Invalid(message)
}

/// A pin from 64 hex digits (colons allowed between pairs) or base64.
pub fn parse_pin(text: &str) -> Result<CertPin, AdminError> {
    let text = text.trim();
    let hex: String = text.chars().filter(|c| *c != ':').collect();
    if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        let mut pin = [0u8; 32];
        for (i, byte) in pin.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
                .map_err(|_| invalid(format!("--pin {text:?}: not hex")))?;
        }
        return Ok(CertPin(pin));
    }
    match B64.decode(text) {
        Ok(bytes) if bytes.len() == 32 => {
            let mut pin = [0u8; 32];
            pin.copy_from_slice(&bytes);
            Ok(CertPin(pin))
        }
        _ => Err(invalid(format!(
            "--pin {text:?}: expected the SHA-256 of the relay's public key as 64 hex digits \
             or base64 (as `rustynet-relay init` or `rustynet-relay pin --cert FILE` prints it)"
        ))),
    }
}

fn parse_addrs(flag: &str, texts: &[String]) -> Result<Vec<SocketAddr>, AdminError> {
    if texts.len() > MAX_RELAY_ADDRS {
        return Err(invalid(format!(
            "{flag}: {} addresses, at most {MAX_RELAY_ADDRS}",
            texts.len()
        )));
    }
    texts
        .iter()
        .map(|text| {
            let addr: SocketAddr = text.trim().parse().map_err(|_| {
                invalid(format!(
                    "{flag} {text:?}: expected IP:PORT ([IPv6]:PORT); maps carry addresses, \
                     give a DNS name with --server-name"
                ))
            })?;
            check_endpoint(&addr).map_err(|why| {
                invalid(format!(
                    "{flag} {addr}: {why}: nodes may not be told to use it"
                ))
            })?;
            Ok(addr)
        })
        .collect()
}

/// Builds and checks the relay `spec` describes (reads `--cert` if given).
pub fn relay_info(spec: &RelaySpec) -> Result<RelayInfo, AdminError> {
    if rustynet_proto::names::validate_label(&spec.name, MAX_RELAY_NAME).is_err() {
        return Err(invalid(format!(
            "invalid relay name {:?}: use 1 to {MAX_RELAY_NAME} lowercase letters, digits and \
             '-' (not first or last)",
            spec.name
        )));
    }
    if spec.addrs.is_empty() {
        return Err(invalid("--addr: give at least one IP:PORT".into()));
    }
    let addrs = parse_addrs("--addr", &spec.addrs)?;
    let stun = parse_addrs("--stun", &spec.stun)?;
    let cert_sha256 = match &spec.pin {
        PinSource::Text(text) => parse_pin(text)?,
        PinSource::CertFile(path) => CertPin(
            rustynet_relay::tls::spki_sha256_of_pem_file(path)
                .map_err(|e| invalid(format!("--cert {}: {e}", path.display())))?,
        ),
    };
    let server_name = match &spec.server_name {
        Some(name) => name.trim().to_ascii_lowercase(),
        None => addrs[0].ip().to_string(),
    };
    let relay = RelayInfo {
        name: spec.name.clone(),
        addrs,
        server_name,
        cert_sha256,
        stun,
    };
    relay
        .check()
        .map_err(|e| invalid(format!("relay {}: {e}", relay.name)))?;
    Ok(relay)
}

/// `relays add`: checks and stores the relay; a running `serve` announces
/// it in every map within its change-poll interval.
pub fn relays_add(data: &DataDir, spec: &RelaySpec) -> Result<RelayInfo, AdminError> {
    let relay = relay_info(spec)?;
    data.open_store()?.add_relay(&relay, now_unix())?;
    Ok(relay)
}

/// `relays list`: the registered relays (not the embedded one, which only
/// `serve` knows), by name.
pub fn relays_list(data: &DataDir) -> Result<Vec<RelayInfo>, AdminError> {
    Ok(data.open_store()?.relays()?)
}

/// `relays remove NAME`.
pub fn relays_remove(data: &DataDir, name: &str) -> Result<RelayInfo, AdminError> {
    Ok(data.open_store()?.remove_relay(name)?)
}

/// A relay left out of the announced list, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The relay's name.
    pub name: String,
    /// Why it is not announced.
    pub reason: String,
}

/// The list every map announces: `embedded` first, then `registered` in
/// order. A relay that fails the node's checks (stored before a rule was
/// added, or edited by hand) or reuses a name already announced is left
/// out and reported, and the list stops at [`MAX_RELAYS`]. Pure.
pub fn announce(
    embedded: Option<&RelayInfo>,
    registered: &[RelayInfo],
) -> (Vec<RelayInfo>, Vec<Skipped>) {
    let mut out: Vec<RelayInfo> = Vec::new();
    let mut skipped = Vec::new();
    for relay in embedded.into_iter().chain(registered) {
        let reason = if let Err(e) = relay.check() {
            e.to_string()
        } else if out.iter().any(|r| r.name == relay.name) {
            "its name is the embedded relay's (--relay-name)".to_owned()
        } else if out.len() == MAX_RELAYS {
            format!("a map carries at most {MAX_RELAYS} relays")
        } else {
            out.push(relay.clone());
            continue;
        };
        skipped.push(Skipped {
            name: relay.name.clone(),
            reason,
        });
    }
    (out, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> RelaySpec {
        RelaySpec {
            name: name.into(),
            addrs: vec!["192.0.2.10:443".into()],
            server_name: None,
            pin: PinSource::Text("ab".repeat(32)),
            stun: vec![],
        }
    }

    fn err(spec: &RelaySpec) -> String {
        relay_info(spec).unwrap_err().to_string()
    }

    #[test]
    fn pins_in_hex_or_base64() {
        let pin = CertPin([0xab; 32]);
        assert_eq!(parse_pin(&"ab".repeat(32)).unwrap(), pin);
        assert_eq!(parse_pin(&"AB:".repeat(32)[..95]).unwrap(), pin);
        assert_eq!(parse_pin(&pin.to_base64()).unwrap(), pin);
        for bad in ["", "ab", &"ab".repeat(31), &"zz".repeat(32), "AAAA"] {
            assert!(parse_pin(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_good_spec_builds_the_announced_relay() {
        let mut s = spec("r1");
        s.addrs.push("[2001:db8::7]:8443".into());
        s.stun = vec!["192.0.2.10:3478".into(), "192.0.2.11:3478".into()];
        let relay = relay_info(&s).unwrap();
        assert_eq!(
            relay.server_name, "192.0.2.10",
            "the first address by default"
        );
        assert_eq!(relay.addrs.len(), 2);
        assert_eq!(relay.stun.len(), 2);
        assert_eq!(relay.cert_sha256, CertPin([0xab; 32]));
        s.server_name = Some("Relay.Example.NET".into());
        assert_eq!(relay_info(&s).unwrap().server_name, "relay.example.net");
    }

    #[test]
    fn bad_specs_are_refused_with_the_reason() {
        assert!(err(&spec("R1")).contains("invalid relay name"));
        assert!(err(&spec("-r")).contains("invalid relay name"));
        let mut s = spec("r1");
        s.addrs = vec!["relay.example.net:443".into()];
        assert!(err(&s).contains("expected IP:PORT"), "{}", err(&s));
        s.addrs = vec!["127.0.0.1:443".into()];
        assert!(err(&s).contains("loopback"), "{}", err(&s));
        s.addrs = vec!["192.0.2.1:0".into()];
        assert!(err(&s).contains("port 0"), "{}", err(&s));
        s.addrs = vec![];
        assert!(err(&s).contains("at least one"));
        s.addrs = (0..=MAX_RELAY_ADDRS)
            .map(|i| format!("192.0.2.{i}:443"))
            .collect();
        assert!(err(&s).contains("at most"));
        let mut s = spec("r1");
        s.stun = vec!["0.0.0.0:3478".into()];
        assert!(err(&s).contains("--stun"), "{}", err(&s));
        let mut s = spec("r1");
        s.server_name = Some("not a name".into());
        assert!(err(&s).contains("invalid name"), "{}", err(&s));
        let mut s = spec("r1");
        s.pin = PinSource::Text("00".into());
        assert!(err(&s).contains("--pin"));
        s.pin = PinSource::CertFile("/nonexistent/relay.pem".into());
        assert!(err(&s).contains("--cert"));
    }

    #[test]
    fn the_embedded_relay_comes_first_and_keeps_its_name() {
        let relay = |name: &str| relay_info(&spec(name)).unwrap();
        let mut broken = relay("broken");
        broken.addrs = vec!["127.0.0.1:443".parse().unwrap()];
        let registered = vec![relay("a"), broken, relay("ctl"), relay("z")];
        let (list, skipped) = announce(Some(&relay("ctl")), &registered);
        let names: Vec<_> = list.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["ctl", "a", "z"]);
        let skipped: Vec<_> = skipped.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(skipped, ["broken", "ctl"]);
        let (list, skipped) = announce(None, &registered[..1]);
        assert_eq!((list.len(), skipped.len()), (1, 0));
        let many: Vec<_> = (0..=MAX_RELAYS).map(|i| relay(&format!("r{i}"))).collect();
        let (list, skipped) = announce(None, &many);
        assert_eq!((list.len(), skipped.len()), (MAX_RELAYS, 1));
    }
}
