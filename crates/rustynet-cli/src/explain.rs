//! `route explain` and `acl explain`: argument parsing and the human form
//! of the daemon's answers (`--json` prints the documents as they are).

use std::fmt::Write as _;

use rustynet_proto::explain::{AclExplainDoc, RouteExplainDoc, RouteOutcome};
use rustynet_proto::ipc::PathKind;

use crate::error::CliError;

/// `PEER[:PORT]` -> (peer, port). A bare IPv6 address has no port form.
pub fn peer_port(arg: &str) -> Result<(String, Option<u16>), CliError> {
    match arg.rsplit_once(':') {
        Some((peer, port)) if !peer.contains(':') => {
            let port = port.parse::<u16>().map_err(|_| {
                CliError::new(
                    "invalid_argument",
                    format!("{arg:?}: the port must be a number from 0 to 65535"),
                )
            })?;
            Ok((peer.to_owned(), Some(port)))
        }
        _ => Ok((arg.to_owned(), None)),
    }
}

fn outcome(o: RouteOutcome) -> &'static str {
    match o {
        RouteOutcome::Tunnel => "through the tunnel",
        RouteOutcome::TunnelNoPeer => "into the tunnel, but no peer carries it (dropped)",
        RouteOutcome::Local => "local (this node)",
        RouteOutcome::Outside => "outside the tunnel (not Rustynet's)",
        RouteOutcome::Unreachable => "unreachable (refused by the route)",
        RouteOutcome::NoRoute => "no route",
    }
}

fn path(p: PathKind) -> &'static str {
    match p {
        PathKind::Direct => "direct",
        PathKind::Relay => "relay",
        PathKind::None => "none",
    }
}

/// The human form of `route explain`.
pub fn route_text(d: &RouteExplainDoc) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}: {}", d.addr, outcome(d.outcome));
    if let Some(rule) = &d.rule {
        let _ = writeln!(out, "  rule:     {rule}");
    }
    if let Some(route) = &d.route {
        let _ = writeln!(out, "  route:    {route}");
    }
    if let Some(p) = &d.peer {
        let via = p
            .via
            .as_deref()
            .map(|v| format!(" via {v}"))
            .unwrap_or_default();
        let online = if p.online {
            ""
        } else {
            ", offline per control"
        };
        let _ = writeln!(
            out,
            "  peer:     {} ({}), allowed {}{online}",
            p.name, p.tunnel_ip, p.prefix
        );
        let _ = writeln!(out, "  path:     {}{via}", path(p.path));
    }
    if !d.standby.is_empty() {
        let _ = writeln!(out, "  standby:  {}", d.standby.join(", "));
    }
    let _ = writeln!(out, "  firewall: {}", d.firewall);
    out
}

/// The human form of `acl explain`.
pub fn acl_text(d: &AclExplainDoc) -> String {
    let list = |v: &[String]| {
        if v.is_empty() {
            "nothing".to_owned()
        } else {
            v.join(", ")
        }
    };
    let mut out = String::new();
    let _ = writeln!(out, "{}", d.verdict);
    let _ = writeln!(
        out,
        "  in from {} ({}): {}",
        d.peer,
        d.tunnel_ip,
        list(&d.inbound)
    );
    let _ = writeln!(out, "  forwarded for it:  {}", list(&d.forwarded));
    let _ = writeln!(out, "  out through it:    {}", list(&d.outbound_lan));
    let _ = writeln!(
        out,
        "  exit node:         {}",
        if d.exit_grant { "may use" } else { "no grant" }
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_and_port() {
        assert_eq!(peer_port("bob").unwrap(), ("bob".into(), None));
        assert_eq!(peer_port("bob:22").unwrap(), ("bob".into(), Some(22)));
        assert_eq!(
            peer_port("100.64.0.2:443").unwrap(),
            ("100.64.0.2".into(), Some(443))
        );
        assert_eq!(peer_port("fd00::1").unwrap(), ("fd00::1".into(), None));
        assert_eq!(peer_port("bob:x").unwrap_err().code, "invalid_argument");
        assert_eq!(peer_port("bob:70000").unwrap_err().code, "invalid_argument");
    }
}
