//! The control server's HTTP API (JSON over TLS 1.3).
//!
//! Enrollment spends a pre-auth key once. Every later request carries an
//! [`RequestAuth`] header: an Ed25519 signature by the node's signing key over
//! the method, path, a millisecond timestamp, a random nonce and the body hash.
//! Control accepts a (node, nonce) pair once inside a short window, so a header
//! copied out of a log cannot be replayed and there is no bearer token at all.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::envelope::{SealedBody, SignedEnvelope};
use crate::handover::KeyHandover;
use crate::keys::{NodeSigningKey, PathPublicKey, Signature, SigningPublicKey, TunnelPublicKey};
use crate::netmap::NodeId;

/// Version of this API. Sent in every request body.
pub const API_VERSION: u16 = 1;

/// Header that carries [`RequestAuth`].
pub const AUTH_HEADER: &str = "x-rustynet-auth";

/// Header of a renewal ([`RegisterRequest::renew`]): a [`RequestAuth`] over
/// the same request made with the node's current signing key, as that node.
pub const RENEW_HEADER: &str = "x-rustynet-renew";

/// Header of a map stream request: how many seconds without a frame the
/// client takes for a dead stream. Control sends keepalives at a third of
/// that (never more often than every 10 s, never less often than its own
/// setting); a client without the header gets them every 15 s, which the
/// 45 s limit of earlier clients expects.
pub const STREAM_SILENCE_HEADER: &str = "x-rustynet-stream-silence";

/// The silence after which a map stream is dead, as this crate's clients
/// declare it ([`STREAM_SILENCE_HEADER`]): three missed keepalives at the
/// 60 s control sends them at by default. A few idle TLS records a minute per
/// node are what 10,000 held streams cost control when nothing changes.
pub const MAP_STREAM_SILENCE: std::time::Duration = std::time::Duration::from_secs(180);

/// Largest request body control accepts.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;

/// How far a request timestamp may be from control's clock, in milliseconds.
pub const MAX_REQUEST_SKEW_MS: i64 = 120_000;

/// Paths of the API.
pub mod paths {
    /// Enrollment with a pre-auth key.
    pub const REGISTER: &str = "/v1/register";
    /// Long-lived stream of signed maps (NDJSON of [`super::StreamFrame`]).
    pub const MAP_STREAM: &str = "/v1/map";
    /// Endpoint and advertisement updates.
    pub const UPDATE: &str = "/v1/update";
    /// Liveness.
    pub const HEALTH: &str = "/v1/health";
    /// A fresh relay ticket for the calling node.
    pub const RELAY_TICKET: &str = "/v1/relay-ticket";
}

/// A secret string (pre-auth key): redacted in `Debug`, zeroized on drop.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecretString(Zeroizing<String>);

impl SecretString {
    /// Wraps a secret.
    pub fn new(value: String) -> Self {
        Self(Zeroizing::new(value))
    }
    /// The secret itself; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Enrollment request. Must carry a [`RequestAuth`] made with `signing_key`
/// (node id 0), proving the node holds the key it registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// [`API_VERSION`].
    pub version: u16,
    /// The pre-auth key.
    pub auth_key: SecretString,
    /// Requested host label.
    pub hostname: String,
    /// Tunnel public key.
    pub node_key: TunnelPublicKey,
    /// Request-signing public key.
    pub signing_key: SigningPublicKey,
    /// UDP endpoints the node listens on.
    pub endpoints: Vec<SocketAddr>,
    /// Offer to be an exit node.
    pub advertise_exit_node: bool,
    /// LAN prefixes offered.
    pub advertise_routes: Vec<IpNet>,
    /// The node's path key (authenticates its path probes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_key: Option<PathPublicKey>,
    /// Renew this node's keys instead of enrolling a new node
    /// (`rustynet up --force-reauth`): same id, address and name, the keys
    /// above, a new key expiry. The request then also carries
    /// [`RENEW_HEADER`], proving the node holds its current key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renew: Option<NodeId>,
}

/// Enrollment result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterResponse {
    /// [`API_VERSION`].
    pub version: u16,
    /// Assigned id.
    pub node_id: NodeId,
    /// Assigned host label (may carry a `-N` suffix).
    pub hostname: String,
    /// Magic DNS name.
    pub dns_name: String,
    /// Tunnel address.
    pub tunnel_ip: Ipv4Addr,
    /// The key every map is signed with; the node pins it.
    pub control_signing_key: SigningPublicKey,
}

/// Update of what a node reports about itself; `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateRequest {
    /// [`API_VERSION`].
    pub version: u16,
    /// New endpoint list.
    pub endpoints: Option<Vec<SocketAddr>>,
    /// Exit-node offer.
    pub advertise_exit_node: Option<bool>,
    /// LAN prefixes offered.
    pub advertise_routes: Option<Vec<IpNet>>,
    /// The node's LAN-access toggle: routers only forward to the LAN for
    /// clients that have it on (enforced on both ends).
    #[serde(default)]
    pub lan_access: Option<bool>,
    /// The node's path key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_key: Option<PathPublicKey>,
    /// The relay the node keeps as its home (a name from its map); an empty
    /// string clears it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub home_relay: Option<String>,
}

/// Request body of [`paths::RELAY_TICKET`] (signed like every node request).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayTicketRequest {
    /// [`API_VERSION`].
    pub version: u16,
}

/// A relay ticket: control's signed statement of this node's relay login
/// key and the peers it may exchange relayed packets with (see
/// [`crate::relay`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayTicketResponse {
    /// [`API_VERSION`].
    pub version: u16,
    /// The signed ticket.
    pub ticket: SignedEnvelope,
}

/// Request body of the map stream.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MapRequest {
    /// [`API_VERSION`].
    pub version: u16,
    /// Highest generation the node holds; control sends a newer map at once.
    pub since_generation: u64,
}

/// One line of the map stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", try_from = "WireFrame")]
pub enum StreamFrame {
    /// A freshly signed map.
    Map {
        /// The envelope.
        envelope: SignedEnvelope,
        /// The control signing key's handovers, oldest first (absent until
        /// the key is first rotated): a node whose pinned key no longer
        /// verifies the map follows them from its pin
        /// ([`crate::NetmapVerifier::verify_following`]).
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        handovers: Vec<KeyHandover>,
    },
    /// Nothing changed; the connection is alive.
    Keepalive,
}

/// The frame as it is decoded. serde buffers an internally tagged enum
/// before picking the variant, and that loses the raw bytes of the signed
/// body; a plain struct reads them straight from the input.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct WireFrame {
    #[serde(rename = "type")]
    kind: FrameKind,
    #[serde(default)]
    envelope: Option<SignedEnvelope>,
    #[serde(default)]
    handovers: Vec<KeyHandover>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum FrameKind {
    Map,
    Keepalive,
}

impl TryFrom<WireFrame> for StreamFrame {
    type Error = &'static str;

    fn try_from(frame: WireFrame) -> Result<Self, Self::Error> {
        match (frame.kind, frame.envelope) {
            (FrameKind::Map, Some(envelope)) => Ok(Self::Map {
                envelope,
                handovers: frame.handovers,
            }),
            (FrameKind::Keepalive, None) if frame.handovers.is_empty() => Ok(Self::Keepalive),
            (FrameKind::Keepalive, None) => Err("keepalive frame with handovers"),
            (FrameKind::Map, None) => Err("map frame without an envelope"),
            (FrameKind::Keepalive, Some(_)) => Err("keepalive frame with an envelope"),
        }
    }
}

/// The map-stream line (with its newline) carrying `sealed` and the key's
/// `handovers`, in pieces to send one after the other, written without
/// parsing the signed body back or copying it: joined, the same bytes as
/// serializing [`StreamFrame::Map`], which a test checks.
pub fn map_frame_pieces(sealed: SealedBody, handovers: &[KeyHandover]) -> [bytes::Bytes; 3] {
    let mut after = Vec::new();
    if !handovers.is_empty() {
        after.extend_from_slice(b",\"handovers\":");
        // Plain data into a Vec: serializing cannot fail.
        let _ = serde_json::to_writer(&mut after, handovers);
    }
    after.extend_from_slice(b"}\n");
    sealed.into_envelope_pieces(b"{\"type\":\"map\",\"envelope\":", &after)
}

/// Error body of every non-2xx response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Stable machine-readable code, e.g. `auth_key_expired`.
    pub code: String,
    /// One human-readable line.
    pub message: String,
}

/// The signed-request header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestAuth {
    /// Claimed node (0 during enrollment).
    pub node_id: NodeId,
    /// Client clock, unix milliseconds.
    pub timestamp_ms: i64,
    /// Random, single use.
    pub nonce: [u8; 16],
    /// Signature over [`request_message`].
    pub sig: Signature,
}

/// Why an auth header did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {AUTH_HEADER} header: {0}")]
pub struct AuthHeaderError(&'static str);

/// The bytes a request signature covers.
pub fn request_message(
    method: &str,
    path: &str,
    node_id: NodeId,
    timestamp_ms: i64,
    nonce: &[u8; 16],
    body: &[u8],
) -> Vec<u8> {
    let digest = Sha256::digest(body);
    format!(
        "rustynet request v1\n{method}\n{path}\n{}\n{timestamp_ms}\n{}\n{}",
        node_id.0,
        B64.encode(nonce),
        B64.encode(digest)
    )
    .into_bytes()
}

impl RequestAuth {
    /// Signs a request.
    pub fn sign(
        key: &NodeSigningKey,
        node_id: NodeId,
        method: &str,
        path: &str,
        body: &[u8],
        timestamp_ms: i64,
        nonce: [u8; 16],
    ) -> Self {
        let sig = key.sign(&request_message(
            method,
            path,
            node_id,
            timestamp_ms,
            &nonce,
            body,
        ));
        Self {
            node_id,
            timestamp_ms,
            nonce,
            sig,
        }
    }

    /// Checks the signature against `key`.
    pub fn verify(&self, key: &SigningPublicKey, method: &str, path: &str, body: &[u8]) -> bool {
        key.verify(
            &request_message(
                method,
                path,
                self.node_id,
                self.timestamp_ms,
                &self.nonce,
                body,
            ),
            &self.sig,
        )
    }

    /// Header value: `node=N;ts=MS;nonce=B64;sig=B64`.
    pub fn to_header(&self) -> String {
        format!(
            "node={};ts={};nonce={};sig={}",
            self.node_id.0,
            self.timestamp_ms,
            B64.encode(self.nonce),
            self.sig
        )
    }

    /// Parses a header value.
    pub fn parse_header(value: &str) -> Result<Self, AuthHeaderError> {
        if value.len() > 512 {
            return Err(AuthHeaderError("too long"));
        }
        let (mut node, mut ts, mut nonce, mut sig) = (None, None, None, None);
        for part in value.split(';') {
            let (k, v) = part
                .split_once('=')
                .ok_or(AuthHeaderError("expected key=value"))?;
            let slot = match k.trim() {
                "node" => &mut node,
                "ts" => &mut ts,
                "nonce" => &mut nonce,
                "sig" => &mut sig,
                _ => return Err(AuthHeaderError("unknown field")),
            };
            if slot.replace(v.trim()).is_some() {
                return Err(AuthHeaderError("repeated field"));
            }
        }
        let node_id = node
            .ok_or(AuthHeaderError("missing node"))?
            .parse::<u64>()
            .map_err(|_| AuthHeaderError("bad node"))?;
        let timestamp_ms = ts
            .ok_or(AuthHeaderError("missing ts"))?
            .parse::<i64>()
            .map_err(|_| AuthHeaderError("bad ts"))?;
        let nonce: [u8; 16] = B64
            .decode(nonce.ok_or(AuthHeaderError("missing nonce"))?)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or(AuthHeaderError("bad nonce"))?;
        let sig = sig
            .ok_or(AuthHeaderError("missing sig"))?
            .parse::<Signature>()
            .map_err(|_| AuthHeaderError("bad sig"))?;
        Ok(Self {
            node_id: NodeId(node_id),
            timestamp_ms,
            nonce,
            sig,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{BodyKind, SignedBody, signed_message};

    #[test]
    fn a_map_frame_line_is_a_stream_frame_with_the_signed_bytes() {
        let key = NodeSigningKey::from_seed(&[5; 32]);
        let body = SignedBody {
            kind: BodyKind::Netmap,
            node_id: NodeId(3),
            generation: 4,
            issued_at: 5,
            expires_at: 6,
            payload: serde_json::json!({"peers": ["a\"b", 1]}),
        };
        let sealed = SealedBody::seal(&key, &body).unwrap();
        let line = map_frame_pieces(sealed.clone(), &[]).concat();
        assert_eq!(line.last(), Some(&b'\n'));
        let frame: StreamFrame = serde_json::from_slice(&line).unwrap();
        let StreamFrame::Map {
            envelope,
            handovers,
        } = &frame
        else {
            panic!("not a map frame: {frame:?}");
        };
        assert!(handovers.is_empty());
        assert_eq!(envelope.body_bytes(), sealed.body());
        assert!(
            key.public()
                .verify(&signed_message(envelope.body_bytes()), &envelope.sig)
        );
        // The hand-written line is exactly what serializing the frame gives.
        let mut derived = serde_json::to_vec(&frame).unwrap();
        derived.push(b'\n');
        assert_eq!(line, derived);
        // With handovers too.
        let handover = KeyHandover::sign(&key, NodeSigningKey::from_seed(&[6; 32]).public(), 9);
        let line = map_frame_pieces(sealed, std::slice::from_ref(&handover)).concat();
        let frame: StreamFrame = serde_json::from_slice(&line).unwrap();
        assert!(matches!(&frame, StreamFrame::Map { handovers, .. } if handovers == &[handover]));
        let mut derived = serde_json::to_vec(&frame).unwrap();
        derived.push(b'\n');
        assert_eq!(line, derived);
    }

    #[test]
    fn frames_of_the_wrong_shape_are_refused() {
        let keepalive: StreamFrame = serde_json::from_str(r#"{"type":"keepalive"}"#).unwrap();
        assert_eq!(keepalive, StreamFrame::Keepalive);
        for bad in [
            r#"{"type":"map"}"#,
            r#"{"type":"keepalive","envelope":null,"x":1}"#,
            r#"{"type":"other"}"#,
            r#"{"envelope":{"v":2,"body":{},"sig":""}}"#,
        ] {
            assert!(serde_json::from_str::<StreamFrame>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn header_roundtrip_and_verify() {
        let key = NodeSigningKey::from_seed(&[5; 32]);
        let auth = RequestAuth::sign(&key, NodeId(3), "POST", "/v1/map", b"{}", 1234, [9; 16]);
        let parsed = RequestAuth::parse_header(&auth.to_header()).unwrap();
        assert_eq!(parsed, auth);
        assert!(parsed.verify(&key.public(), "POST", "/v1/map", b"{}"));
        assert!(!parsed.verify(&key.public(), "POST", "/v1/update", b"{}"));
        assert!(!parsed.verify(&key.public(), "POST", "/v1/map", b"{ }"));
    }

    #[test]
    fn header_parse_errors() {
        for bad in [
            "",
            "node=1",
            "node=x;ts=1;nonce=AAAA;sig=AAAA",
            "node=1;node=2",
            "zz=1",
        ] {
            assert!(RequestAuth::parse_header(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn secret_debug_is_redacted() {
        let req = RegisterRequest {
            path_key: None,
            version: API_VERSION,
            auth_key: SecretString::new("rnk_supersecret".into()),
            hostname: "a".into(),
            node_key: TunnelPublicKey([0; 32]),
            signing_key: SigningPublicKey([0; 32]),
            endpoints: vec![],
            advertise_exit_node: false,
            advertise_routes: vec![],
            renew: None,
        };
        assert!(!format!("{req:?}").contains("supersecret"));
    }
}
