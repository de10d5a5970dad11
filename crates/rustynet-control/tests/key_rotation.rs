//! Rotation of the control signing key while the server runs: nodes follow
//! the handover from the key they pinned, with the same verifier code the
//! daemon runs, and refuse the old key's maps afterwards.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{Harness, POLICY_ALL, next_map};
use rustynet_control::map_json::seal_netmap_json;
use rustynet_control_client::MapStream;
use rustynet_proto::control_api::StreamFrame;
use rustynet_proto::handover::KeyHandover;
use rustynet_proto::verify::GenerationRule;
use rustynet_proto::{
    NetmapVerifier, NodeId, SigningPublicKey, VerifiedNetmap, VerifyError, VerifyPolicy,
};

/// What a node does with each frame: verify with its pin, following the
/// handovers sent beside the map; returns the map and the new pin, if any.
async fn next_followed(
    stream: &mut MapStream,
    node: NodeId,
    pin: SigningPublicKey,
    high_water: u64,
) -> (VerifiedNetmap, Option<SigningPublicKey>, Vec<KeyHandover>) {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(20), stream.next_frame())
            .await
            .expect("no frame within 20 s")
            .unwrap()
            .expect("stream closed");
        if let StreamFrame::Map {
            envelope,
            handovers,
        } = frame
        {
            let verifier = NetmapVerifier::new(pin, node, VerifyPolicy::default());
            let (map, rotated) = verifier
                .verify_following(
                    envelope,
                    &handovers,
                    GenerationRule::After(high_water),
                    rustynet_control::now_unix(),
                )
                .unwrap();
            return (map, rotated, handovers);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_follow_a_rotation_and_refuse_the_old_key_after() {
    let h = Harness::start(Duration::from_secs(600)).await;
    h.set_policy(POLICY_ALL);
    let key = h.preauth("alice", true, None);
    let a = h.enroll(&key, "a", 1).await;
    let k1 = a.resp.control_signing_key;
    let old_key = h.data.signing_key().unwrap();
    assert_eq!(old_key.public(), k1);
    let mut hw = 0;
    let mut stream = a.stream(&h).await;
    let (first, rotated, handovers) = next_followed(&mut stream, a.resp.node_id, k1, hw).await;
    assert!(rotated.is_none() && handovers.is_empty());
    hw = first.generation();

    let handover = rustynet_control::admin::signing_key_rotate(&h.data).unwrap();
    let k2 = handover.to;
    assert_eq!(handover.from, k1);
    assert_ne!(k2, k1);
    // The running server switches and sends a map signed by the new key at
    // once, with the handover; the node pinned to k1 follows it.
    let (map, rotated, handovers) = next_followed(&mut stream, a.resp.node_id, k1, hw).await;
    assert_eq!(rotated, Some(k2));
    assert_eq!(handovers, vec![handover.clone()]);
    assert_eq!(map.netmap(), first.netmap());
    hw = map.generation();
    // With the new pin, a map signed by the old key is refused.
    let snapshot = h.server.network.current();
    let json = snapshot.netmap_json(a.resp.node_id).unwrap();
    let stale = seal_netmap_json(
        &old_key,
        json,
        a.resp.node_id,
        hw + 1_000_000,
        rustynet_control::now_unix(),
        600,
    )
    .sealed
    .to_envelope()
    .unwrap();
    let pinned = NetmapVerifier::new(k2, a.resp.node_id, VerifyPolicy::default());
    assert_eq!(
        pinned
            .verify_following(
                stale,
                &handovers,
                GenerationRule::After(hw),
                rustynet_control::now_unix()
            )
            .unwrap_err(),
        VerifyError::BadSignature
    );
    // New nodes pin the new key directly.
    let b = h.enroll(&key, "b", 2).await;
    assert_eq!(b.resp.control_signing_key, k2);
    let mut sb = b.stream(&h).await;
    let mut hwb = 0;
    next_map(&mut sb, &b, &mut hwb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_offline_through_two_rotations_follows_the_whole_chain() {
    let h = Harness::start(Duration::from_secs(600)).await;
    let key = h.preauth("alice", true, None);
    let a = h.enroll(&key, "a", 1).await;
    let k1 = a.resp.control_signing_key;
    let first = rustynet_control::admin::signing_key_rotate(&h.data).unwrap();
    let second = rustynet_control::admin::signing_key_rotate(&h.data).unwrap();
    assert_eq!(second.from, first.to);
    // The server picks the newest key up on its next look at the key file;
    // maps signed by an older key of the chain may come first (on a busy
    // machine), then one signed by the newest follows.
    let mut stream = a.stream(&h).await;
    let followed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let (_, rotated, handovers) = next_followed(&mut stream, a.resp.node_id, k1, 0).await;
            if rotated == Some(second.to) {
                break handovers;
            }
            assert!(
                rotated.is_none() || rotated == Some(first.to),
                "signed by a key outside the chain: {rotated:?}"
            );
        }
    });
    let handovers = followed
        .await
        .expect("no map signed by the newest key within 10 s");
    assert_eq!(handovers, vec![first, second]);
    // A pin no handover starts from follows nothing.
    let stranger = rustynet_proto::NodeSigningKey::from_seed(&[77; 32]).public();
    let snapshot = h.server.network.current();
    let json = snapshot.netmap_json(a.resp.node_id).unwrap();
    let env = seal_netmap_json(
        &h.data.signing_key().unwrap(),
        json,
        a.resp.node_id,
        u64::MAX / 2,
        rustynet_control::now_unix(),
        600,
    )
    .sealed
    .to_envelope()
    .unwrap();
    let verifier = NetmapVerifier::new(stranger, a.resp.node_id, VerifyPolicy::default());
    assert_eq!(
        verifier
            .verify_following(
                env,
                &handovers,
                GenerationRule::After(0),
                rustynet_control::now_unix()
            )
            .unwrap_err(),
        VerifyError::BadSignature
    );
}

#[test]
fn an_interrupted_rotation_is_completed_or_dropped() {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("control");
    let data = rustynet_control::datadir::DataDir::new(&root);
    data.init("rustynet.internal", &[]).unwrap();
    let put = |name: &str, bytes: &[u8]| {
        let path = root.join(name);
        std::fs::write(&path, bytes).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    let first = rustynet_control::admin::signing_key_rotate(&data).unwrap();
    let before = std::fs::read(root.join("signing.key")).unwrap();
    let second = rustynet_control::admin::signing_key_rotate(&data).unwrap();
    // As if interrupted after the handover was written: the new key still
    // beside the old one.
    put(
        "signing.key.next",
        &std::fs::read(root.join("signing.key")).unwrap(),
    );
    put("signing.key", &before);
    assert_eq!(data.signing_key().unwrap().public(), first.to);
    data.finish_rotation().unwrap();
    assert_eq!(data.signing_key().unwrap().public(), second.to);
    assert!(!root.join("signing.key.next").exists());
    // A leftover key that no handover names is dropped, the key stays.
    put("signing.key.next", &before);
    data.finish_rotation().unwrap();
    assert!(!root.join("signing.key.next").exists());
    assert_eq!(data.signing_key().unwrap().public(), second.to);
    assert_eq!(data.signing_handovers().unwrap(), vec![first, second]);
}
