//! Arbitrary bytes through everything on the relay that parses untrusted
//! input: the frame decoder (each frame must re-encode to exactly the bytes
//! it came from), the protocol core (the decoded frames as the traffic of a
//! logged-in node: no panic, and whatever it queues must decode), the
//! binding parsers (an answer never outgrows its request) and the HTTP
//! upgrade parsers.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use rustynet_proto::relay::RelayTicket;
use rustynet_proto::{NodeId, NodeSigningKey, SealedBody, TunnelPublicKey};
use rustynet_relay::core::{ConnId, Limits, Now, RelayCore};
use rustynet_relay::frame::{Decoder, Frame};
use rustynet_relay::{Metrics, binding, login, upgrade};

const T0: i64 = 1_800_000_000;

struct Fixture {
    login: [Frame; 2],
}

fn ticket(control: &NodeSigningKey, n: u8, peer: u8) -> Bytes {
    let body = RelayTicket {
        node_key: TunnelPublicKey([n; 32]),
        login_key: NodeSigningKey::from_seed(&[n; 32]).public(),
        peers: vec![TunnelPublicKey([peer; 32])],
    }
    .into_body(NodeId(u64::from(n)), 1, T0, T0 + 3600);
    let env = SealedBody::seal(control, &body)
        .expect("seal")
        .to_envelope()
        .expect("envelope");
    Bytes::from(env.to_json())
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let control = NodeSigningKey::from_seed(&[9; 32]);
        let frame = |n: u8, peer: u8| {
            let t = ticket(&control, n, peer);
            let sig =
                login::sign_login(&NodeSigningKey::from_seed(&[n; 32]), &[n; 32], &[n; 32], &t);
            Frame::Login { sig, ticket: t }
        };
        Fixture {
            login: [frame(1, 2), frame(2, 1)],
        }
    })
}

fn core_with_two_nodes() -> (RelayCore, Now) {
    let control = NodeSigningKey::from_seed(&[9; 32]);
    let mut core = RelayCore::new(
        Limits::default(),
        vec![control.public()],
        Metrics::default(),
    );
    core.enable_udp();
    let now = Now {
        instant: Instant::now(),
        unix: T0,
    };
    for n in 1..=2u8 {
        let id = ConnId(u64::from(n));
        let peer = ([192, 0, 2, n], 4000).into();
        core.handle_accept(id, peer, now).expect("under the caps");
        core.handle_upgraded(id, [n; 32], [n; 32]);
        core.handle_frame(id, fixture().login[usize::from(n - 1)].clone(), now);
    }
    (core, now)
}

fuzz_target!(|data: &[u8]| {
    // Frames: every decoded frame re-encodes to the bytes it came from.
    let decoder = Decoder::new(4096);
    let mut buf = BytesMut::from(data);
    let mut frames = Vec::new();
    loop {
        let before = buf.clone();
        match decoder.decode(&mut buf) {
            Ok(Some(frame)) => {
                let used = before.len() - buf.len();
                let mut again = Vec::new();
                frame.encode(&mut again);
                let lossy = matches!(&frame, Frame::LoginRefused { .. })
                    && std::str::from_utf8(&before[6..used]).is_err();
                if !lossy {
                    assert_eq!(&again[..], &before[..used]);
                }
                frames.push(frame);
            }
            Ok(None) | Err(_) => break,
        }
    }

    // The core: the frames as node 1's traffic, with time passing. (Set up
    // only when there are frames: two logins cost four signature checks.)
    if !frames.is_empty() {
        let (mut core, mut now) = core_with_two_nodes();
        for frame in frames {
            now.instant += Duration::from_millis(7);
            core.handle_frame(ConnId(1), frame, now);
            core.handle_timeout(now);
        }
        // The same bytes as a UDP relay datagram (hello or tunnel message).
        let mut datagram = data.to_vec();
        let _ = core.handle_udp(std::net::SocketAddr::from(([192, 0, 2, 1], 1)), &mut datagram, now);
        while core.poll_event().is_some() {}
        for id in [ConnId(1), ConnId(2)] {
            let mut out = Vec::new();
            while core.drain(id, &mut out, 1 << 16, now) {}
            let mut queued = BytesMut::from(&out[..]);
            while let Some(frame) = decoder
                .decode(&mut queued)
                .expect("the core queues valid frames")
            {
                let _ = frame;
            }
            assert!(queued.is_empty());
        }
    }

    // Binding and upgrade parsers.
    if let Some(txid) = binding::parse_request(data) {
        let (_, len) = binding::response(&txid, "[2001:db8::1]:9".parse().expect("addr"));
        assert!(len <= data.len());
    }
    let _ = binding::parse_response(data);
    let _ = upgrade::parse_request(data);
    let _ = upgrade::parse_response(data);
});
