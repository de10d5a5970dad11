//! The login proof: what a node signs to show it holds its ticket's login key
//! on this very TLS connection.
//!
//! The signed message binds three things: the TLS session (32 bytes of
//! keying material exported from it, RFC 8446 §7.5), the relay's fresh
//! challenge, and the exact ticket bytes. A login captured on one connection
//! therefore verifies on no other: a different session exports different
//! material even if an attacker replays the challenge. DERP's login is not
//! bound to its channel; this one is.

use rustynet_proto::{NodeSigningKey, Signature, SigningPublicKey};

/// Domain separation: a login signature is never valid as anything else.
pub const LOGIN_DOMAIN: &[u8] = b"rustynet relay login v1\0";
/// Label for `export_keying_material`, no context.
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-rustynet-relay-login";

/// `LOGIN_DOMAIN || exporter || challenge || BLAKE3(ticket)`.
pub fn login_message(exporter: &[u8; 32], challenge: &[u8; 32], ticket: &[u8]) -> Vec<u8> {
    let mut msg = Vec::with_capacity(LOGIN_DOMAIN.len() + 32 + 32 + blake3::OUT_LEN);
    msg.extend_from_slice(LOGIN_DOMAIN);
    msg.extend_from_slice(exporter);
    msg.extend_from_slice(challenge);
    msg.extend_from_slice(blake3::hash(ticket).as_bytes());
    msg
}

/// The node's side: signs the login for this session and challenge.
pub fn sign_login(
    key: &NodeSigningKey,
    exporter: &[u8; 32],
    challenge: &[u8; 32],
    ticket: &[u8],
) -> Signature {
    key.sign(&login_message(exporter, challenge, ticket))
}

/// The relay's side: whether `sig` proves `login_key` for this session.
pub fn verify_login(
    login_key: &SigningPublicKey,
    exporter: &[u8; 32],
    challenge: &[u8; 32],
    ticket: &[u8],
    sig: &Signature,
) -> bool {
    login_key.verify(&login_message(exporter, challenge, ticket), sig)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_proof_is_bound_to_session_challenge_and_ticket() {
        let key = NodeSigningKey::from_seed(&[1; 32]);
        let sig = sign_login(&key, &[2; 32], &[3; 32], b"ticket");
        assert!(verify_login(
            &key.public(),
            &[2; 32],
            &[3; 32],
            b"ticket",
            &sig
        ));
        assert!(!verify_login(
            &key.public(),
            &[9; 32],
            &[3; 32],
            b"ticket",
            &sig
        ));
        assert!(!verify_login(
            &key.public(),
            &[2; 32],
            &[9; 32],
            b"ticket",
            &sig
        ));
        assert!(!verify_login(
            &key.public(),
            &[2; 32],
            &[3; 32],
            b"tickeT",
            &sig
        ));
        let other = NodeSigningKey::from_seed(&[4; 32]);
        assert!(!verify_login(
            &other.public(),
            &[2; 32],
            &[3; 32],
            b"ticket",
            &sig
        ));
    }
}
