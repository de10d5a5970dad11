//! The daemon's IPC frame decoder: one JSON line, refused past
//! `MAX_FRAME_BYTES`, as a request (what the daemon reads) and as a
//! response (what the CLI reads). Anything that decodes must encode and
//! decode back to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rustynet_proto::ipc::{IpcRequest, IpcResponse, MAX_FRAME_BYTES};

fuzz_target!(|data: &[u8]| {
    for line in data.split(|b| *b == b'\n') {
        if line.len() > MAX_FRAME_BYTES {
            continue;
        }
        if let Ok(req) = serde_json::from_slice::<IpcRequest>(line) {
            let json = serde_json::to_vec(&req).expect("requests encode");
            let again: IpcRequest = serde_json::from_slice(&json).expect("requests round trip");
            assert_eq!(again, req);
            let _ = (req.cmd.is_mutating(), req.cmd.name());
        }
        if let Ok(resp) = serde_json::from_slice::<IpcResponse>(line) {
            let json = serde_json::to_vec(&resp).expect("responses encode");
            let again: IpcResponse = serde_json::from_slice(&json).expect("responses round trip");
            assert_eq!(again, resp);
        }
    }
});
