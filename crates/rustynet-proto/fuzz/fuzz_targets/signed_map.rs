//! The signed-map decoder and verifier a node runs on everything control
//! sends. The first byte picks how the rest is used:
//! - even: as received bytes — a map-stream line, then an envelope;
//! - odd: as a signed body that control's key signs here, so the fuzzer
//!   reaches the body parser and the semantic checks behind the signature.
//!
//! Besides "never panics": a map that passes is within every limit, and
//! verifies the same way again from its stored envelope.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use rustynet_proto::control_api::StreamFrame;
use rustynet_proto::netmap::{MAX_SET_ELEMENTS, MapShape};
use rustynet_proto::verify::GenerationRule;
use rustynet_proto::{
    NetmapVerifier, NodeId, NodeSigningKey, SealedBody, VerifiedNetmap, VerifyPolicy,
};

const NOW: i64 = 1_800_000_000;

fn key() -> &'static NodeSigningKey {
    static KEY: OnceLock<NodeSigningKey> = OnceLock::new();
    KEY.get_or_init(|| NodeSigningKey::from_seed(&[3; 32]))
}

fn verifier() -> NetmapVerifier {
    NetmapVerifier::new(key().public(), NodeId(7), VerifyPolicy::default())
}

fn check_accepted(map: &VerifiedNetmap) {
    let shape = MapShape::of(map.netmap());
    assert!(shape.check().is_ok());
    assert!(shape.set_elements() <= MAX_SET_ELEMENTS);
    let again = verifier()
        .verify(
            map.envelope.clone(),
            GenerationRule::Exactly(map.generation()),
            NOW,
        )
        .expect("an accepted map verifies again from its envelope");
    assert_eq!(&again.body, &map.body);
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let v = verifier();
    if mode % 2 == 0 {
        if let Ok(StreamFrame::Map { envelope, handovers }) = serde_json::from_slice::<StreamFrame>(rest)
            && let Ok((map, _)) = v.verify_following(envelope, &handovers, GenerationRule::After(0), NOW)
        {
            check_accepted(&map);
        }
        if let Ok(map) = v.verify_wire(rest, GenerationRule::After(0), NOW) {
            check_accepted(&map);
        }
    } else {
        let sealed = SealedBody::sign(key(), rest.to_vec().into());
        let Ok(envelope) = sealed.to_envelope() else {
            return;
        };
        if let Ok(map) = v.verify(envelope, GenerationRule::After(0), NOW) {
            check_accepted(&map);
        }
    }
});
