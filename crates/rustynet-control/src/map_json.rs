//! Writes and seals each node's map as JSON straight from shared pieces.
//!
//! A node is an entry in the map of every peer that sees it, so rebuilding
//! all N maps after a change would serialize each entry once per viewer (72
//! times on average in the 10k-node bench). [`PeerFragments`] serializes an
//! entry the first time a map of one snapshot needs it and copies it after
//! that; the map's own parts (its filter, grants, self) are serialized per
//! map. The output is byte for byte what serializing
//! the map's value gives (tested against a plain
//! value builder), and the
//! signed header goes into room left in front of it, so the map is never
//! re-serialized nor copied on its way to the wire.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use rustynet_policy::NodeView;
use rustynet_proto::netmap::{NETMAP_VERSION, RelayInfo};
use rustynet_proto::{NodeId, NodeSigningKey, SealedBody};
use serde::Serialize;

use crate::netmap_builder::{
    LiveNodes, NetworkView, dns_record, exit_grants, peer_info, self_info,
};
use crate::store::NodeRecord;

/// One network state (live nodes, who is online, the DNS suffix) and, per
/// node, its map entry and DNS record as JSON, each filled when a map first
/// needs it. The entry carries the node's online flag, so every snapshot
/// gets its own.
#[derive(Debug)]
pub struct PeerFragments {
    suffix: String,
    nodes: Arc<LiveNodes>,
    online: Arc<HashSet<NodeId>>,
    /// The relays every map announces.
    relays: Arc<[RelayInfo]>,
    /// `,"relays":[…]` as every map of this state ends with it, serialized
    /// once; empty when there are none (the field is then omitted).
    relays_json: Vec<u8>,
    /// One slot per node of `nodes`, so a slot exists exactly for a live node.
    slots: HashMap<NodeId, Fragment, BuildHasherDefault<NodeIdHasher>>,
}

#[derive(Debug, Default)]
struct Fragment {
    /// The entry as a viewer without an exit grant or routes for it sees it.
    peer: OnceLock<Vec<u8>>,
    /// The entry for viewers granted this node as exit.
    peer_as_exit: OnceLock<Vec<u8>>,
    dns: OnceLock<Vec<u8>>,
}

/// Hashes a [`NodeId`] by one multiplication. Map building looks up every
/// peer of every map (720k lookups for 10k nodes), and the ids come from
/// control's own counter, not from anyone who could aim for collisions, so
/// SipHash's flood resistance buys nothing here.
#[derive(Debug, Default)]
pub struct NodeIdHasher(u64);

impl Hasher for NodeIdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b) ^ self.0.rotate_left(8));
        }
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing: spreads consecutive ids over the high bits,
        // which hashbrown uses for its control bytes.
        self.0 = (self.0 ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// How one JSON value gets into a map. Resolving it looks the node's record
/// up only when the value is not serialized yet.
enum Piece<'a> {
    /// Serialized already.
    Ready(&'a [u8]),
    /// To serialize from the record into the shared slot.
    Fill(&'a OnceLock<Vec<u8>>, &'a NodeRecord),
    /// Particular to this viewer: serialized from the record, not shared.
    Own(&'a NodeRecord),
}

impl Piece<'_> {
    fn write(&self, out: &mut Vec<u8>, make: impl Fn(&NodeRecord) -> Vec<u8>) {
        match self {
            Piece::Ready(bytes) => out.extend_from_slice(bytes),
            Piece::Fill(slot, record) => out.extend_from_slice(slot.get_or_init(|| make(record))),
            Piece::Own(record) => out.extend_from_slice(&make(record)),
        }
    }
}

fn json(value: &impl Serialize) -> Vec<u8> {
    // Map types are plain data (no non-string keys): serializing them into
    // a Vec cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

/// Appends `,"name":value` (or `{"name":value` for the first field).
fn field(out: &mut Vec<u8>, first: bool, name: &str, value: &impl Serialize) {
    out.extend_from_slice(if first { b"{\"" } else { b",\"" });
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b"\":");
    // Writing plain data into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// Room left in front of a map's JSON for the signed header, so sealing
/// writes the header in place and the body is one contiguous buffer: the
/// longest header (`{"kind":"netmap","node_id":…,"payload":` with four
/// 20-character numbers) is 159 bytes. BLAKE3 hashes a contiguous body
/// about twice as fast as the same bytes fed in pieces that are not
/// aligned to its 1 KiB chunks.
const HEAD_ROOM: usize = 160;

/// A map's JSON, with room in front for the signed header.
#[derive(Debug, Clone)]
pub struct MapJson {
    buf: Vec<u8>,
}

impl MapJson {
    /// The map's JSON.
    pub fn payload(&self) -> &[u8] {
        &self.buf[HEAD_ROOM..]
    }

    /// Wraps JSON written elsewhere (tools and tests).
    pub fn from_payload(json: &[u8]) -> Self {
        let mut buf = vec![b' '; HEAD_ROOM];
        buf.extend_from_slice(json);
        Self { buf }
    }
}

impl PeerFragments {
    /// Empty slots for the live `nodes`.
    pub fn new(suffix: &str, nodes: Arc<LiveNodes>, online: Arc<HashSet<NodeId>>) -> Self {
        let slots = nodes.keys().map(|id| (*id, Fragment::default())).collect();
        Self {
            suffix: suffix.to_owned(),
            nodes,
            online,
            relays: Arc::from([]),
            relays_json: Vec::new(),
            slots,
        }
    }

    /// Announces `relays` in every map (and lets a peer's home relay through
    /// when it is one of them). Their JSON is written here, once.
    pub fn with_relays(mut self, relays: Arc<[RelayInfo]>) -> Self {
        self.relays_json.clear();
        if !relays.is_empty() {
            self.relays_json.extend_from_slice(b",\"relays\":");
            self.relays_json.extend_from_slice(&json(&&*relays));
        }
        self.relays = relays;
        self
    }

    /// The network state these fragments describe.
    pub fn net(&self) -> NetworkView<'_> {
        NetworkView {
            suffix: &self.suffix,
            nodes: &self.nodes,
            online: &self.online,
            relays: &self.relays,
        }
    }

    /// `lock`'s value if it is filled, else what is needed to fill it (or,
    /// without a lock, to serialize it); `None` if `id` is not live.
    fn piece<'a>(&'a self, lock: Option<&'a OnceLock<Vec<u8>>>, id: NodeId) -> Option<Piece<'a>> {
        if let Some(bytes) = lock.and_then(OnceLock::get) {
            return Some(Piece::Ready(bytes));
        }
        let record = self.nodes.get(&id)?;
        Some(match lock {
            Some(lock) => Piece::Fill(lock, record),
            None => Piece::Own(record),
        })
    }

    /// The JSON of `id`'s map under `view`; `None` if the node is not live.
    pub fn netmap_json(&self, id: NodeId, view: &NodeView) -> Option<MapJson> {
        let net = self.net();
        let me = self.nodes.get(&id)?;
        // Each visible live peer: its entry (shared unless routes make it
        // this viewer's own) and its DNS record.
        let peers: Vec<(NodeId, bool, Piece<'_>, Piece<'_>)> = view
            .visible_peers
            .iter()
            .filter_map(|&peer| {
                let slot = self.slots.get(&peer)?;
                let exit = view.exit_grants.contains(&peer);
                let entry = match view.peer_routes.contains_key(&peer) {
                    true => None,
                    false if exit => Some(&slot.peer_as_exit),
                    false => Some(&slot.peer),
                };
                Some((
                    peer,
                    exit,
                    self.piece(entry, peer)?,
                    self.piece(Some(&slot.dns), peer)?,
                ))
            })
            .collect();
        let mut out =
            Vec::with_capacity(HEAD_ROOM + 2048 + self.relays_json.len() + 600 * peers.len() + 1);
        out.resize(HEAD_ROOM, b' ');
        field(&mut out, true, "version", &NETMAP_VERSION);
        field(&mut out, false, "self_node", &self_info(me, net, view));
        out.extend_from_slice(b",\"peers\":[");
        for (i, (peer, exit, entry, _)) in peers.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            let routes = view.peer_routes.get(peer);
            entry.write(&mut out, |r| json(&peer_info(net, r, routes, *exit)));
        }
        out.push(b']');
        field(&mut out, false, "packet_filter", &view.packet_filter);
        field(&mut out, false, "exit_clients", &view.exit_clients);
        field(&mut out, false, "forward_filter", &view.forward_filter);
        field(&mut out, false, "exit_grants", &exit_grants(net, view));
        field(&mut out, false, "lan_grants", &view.lan_grants);
        out.extend_from_slice(b",\"dns\":");
        field(&mut out, true, "suffix", &net.suffix);
        out.extend_from_slice(b",\"records\":[");
        let dns = |r: &NodeRecord| json(&dns_record(r, net.suffix));
        let my_dns = self.slots.get(&id).map(|slot| &slot.dns);
        self.piece(my_dns, id)?.write(&mut out, dns);
        for (_, _, _, record) in &peers {
            out.push(b',');
            record.write(&mut out, dns);
        }
        out.push(b']');
        field(&mut out, false, "split", &view.split_dns);
        out.push(b'}');
        out.extend_from_slice(&self.relays_json);
        out.push(b'}');
        Some(MapJson { buf: out })
    }
}

/// A sealed map and its JSON (which shares the sealed body's buffer).
#[derive(Debug, Clone)]
pub struct SealedMap {
    /// The signed body, ready to frame.
    pub sealed: SealedBody,
    /// The map's JSON, to compare with the next map.
    pub payload: Bytes,
}

/// Signs map JSON for `node` with a fresh `generation`, valid for
/// `ttl_secs`: the body is the JSON of a [`rustynet_proto::SignedBody`]
/// around it, its header written into the room in front of the map.
pub fn seal_netmap_json(
    key: &NodeSigningKey,
    map: MapJson,
    node: NodeId,
    generation: u64,
    now: i64,
    ttl_secs: i64,
) -> SealedMap {
    let head = format!(
        "{{\"kind\":\"netmap\",\"node_id\":{},\"generation\":{generation},\
         \"issued_at\":{now},\"expires_at\":{},\"payload\":",
        node.0,
        now.saturating_add(ttl_secs)
    );
    let (mut buf, start, at) = match HEAD_ROOM.checked_sub(head.len()) {
        Some(start) => {
            let mut buf = map.buf;
            buf[start..HEAD_ROOM].copy_from_slice(head.as_bytes());
            (buf, start, HEAD_ROOM)
        }
        // The room fits the longest header (a test seals one); were it ever
        // short, copy rather than cut the header.
        None => {
            let mut buf = head.into_bytes();
            let at = buf.len();
            buf.extend_from_slice(map.payload());
            (buf, 0, at)
        }
    };
    buf.push(b'}');
    let end = buf.len() - 1;
    let whole = Bytes::from(buf);
    SealedMap {
        payload: whole.slice(at..end),
        sealed: SealedBody::sign(key, whole.slice(start..)),
    }
}

#[cfg(test)]
mod tests;
