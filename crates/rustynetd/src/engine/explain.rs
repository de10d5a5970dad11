//! `route explain` and `acl explain`: the kernel's rules and routes and the
//! engine's paths, handed to the pure functions of [`crate::explain`].

use std::collections::BTreeMap;
use std::net::IpAddr;

use rustynet_proto::ipc::{ErrorCode, Reply};

use super::Engine;
use super::status::peer_path;
use crate::explain;
use crate::messages::IpcFailure;

impl Engine {
    fn applied_map(&self) -> Result<(&rustynet_proto::Netmap, &crate::plan::Desired), IpcFailure> {
        match (&self.current, &self.desired) {
            (Some(m), Some(d)) if d.generation > 0 => Ok((m.netmap(), d)),
            _ => Err(Self::fail(
                ErrorCode::WrongState,
                "no generation applied (not connected, or failing closed)",
            )),
        }
    }

    pub(super) fn cmd_route_explain(&mut self, addr: IpAddr) -> Result<Reply, IpcFailure> {
        self.applied_map()?;
        let rules = self
            .fx
            .routing
            .list_rules()
            .map_err(|e| Self::fail(ErrorCode::Internal, format!("reading rules: {e}")))?;
        let mut tables = BTreeMap::new();
        let mut failed = None;
        let lookup = explain::kernel_lookup(addr, 0, &rules, |table| {
            tables
                .entry(table)
                .or_insert_with(|| {
                    self.fx.routing.list_routes(table).unwrap_or_else(|e| {
                        failed = Some(format!("reading table {table}: {e}"));
                        vec![]
                    })
                })
                .clone()
        });
        if let Some(e) = failed {
            return Err(Self::fail(ErrorCode::Internal, e));
        }
        let stats = self.fx.backend.stats().ok();
        let (netmap, desired) = self.applied_map()?;
        let path_of = |p: &rustynet_proto::PeerInfo| {
            peer_path(stats.as_ref().and_then(|s| s.peer(&p.node_key)))
        };
        Ok(Reply::RouteExplain(explain::route_explain(
            addr,
            &lookup,
            &self.cfg.tun,
            netmap,
            desired,
            &path_of,
        )))
    }

    pub(super) fn cmd_acl_explain(
        &self,
        peer: &str,
        port: Option<u16>,
    ) -> Result<Reply, IpcFailure> {
        let (netmap, desired) = self.applied_map()?;
        explain::acl_explain(netmap, desired, peer, port)
            .map(Reply::AclExplain)
            .map_err(|e| Self::fail(ErrorCode::InvalidArgument, e.to_string()))
    }
}
