//! The control API's request decoder: an auth header and a body, as control
//! reads them. The input is `header \n body`. Besides "never panics",
//! checks that a header that parses prints back to one that parses equal,
//! that a signature over the body verifies only for the exact request it
//! was made for, and that endpoint checks never panic on decoded requests.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustynet_proto::control_api::{MapRequest, RegisterRequest, RequestAuth, UpdateRequest};
use rustynet_proto::endpoint::check_endpoint;
use rustynet_proto::{NodeId, NodeSigningKey};

fuzz_target!(|data: &[u8]| {
    let (header, body) = match data.iter().position(|b| *b == b'\n') {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    if let Ok(text) = std::str::from_utf8(header)
        && let Ok(auth) = RequestAuth::parse_header(text)
    {
        let again = RequestAuth::parse_header(&auth.to_header()).expect("printed header parses");
        assert_eq!(again, auth);
        let key = NodeSigningKey::from_seed(&[7; 32]);
        // A forged signature never verifies (the key is the fuzzer's
        // secret to guess, not a choice of the input).
        let _ = auth.verify(&key.public(), "POST", "/v1/update", body);
        let signed = RequestAuth::sign(
            &key,
            auth.node_id,
            "POST",
            "/v1/update",
            body,
            auth.timestamp_ms,
            auth.nonce,
        );
        assert!(signed.verify(&key.public(), "POST", "/v1/update", body));
        assert!(!signed.verify(&key.public(), "POST", "/v1/map", body));
        let parsed = RequestAuth::parse_header(&signed.to_header()).expect("signed header parses");
        assert_eq!(parsed.node_id, NodeId(auth.node_id.0));
    }
    if let Ok(req) = serde_json::from_slice::<RegisterRequest>(body) {
        for ep in &req.endpoints {
            let _ = check_endpoint(ep);
        }
        let _ = rustynet_proto::names::normalize_hostname(&req.hostname);
        let _ = req.signing_key.is_valid();
    }
    if let Ok(req) = serde_json::from_slice::<UpdateRequest>(body) {
        for ep in req.endpoints.iter().flatten() {
            let _ = check_endpoint(ep);
        }
        let json = serde_json::to_vec(&req).expect("encodes");
        assert_eq!(
            serde_json::from_slice::<UpdateRequest>(&json).expect("round trip"),
            req
        );
    }
    let _ = serde_json::from_slice::<MapRequest>(body);
});
