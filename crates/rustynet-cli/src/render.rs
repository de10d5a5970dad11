//! Text and JSON rendering of replies.

use std::fmt::Write as _;

use rustynet_proto::ipc::{PathKind, Reply};

/// The reply's data as one JSON document.
pub fn json(reply: &Reply) -> String {
    let value = match reply {
        Reply::Status(s) => serde_json::to_value(s),
        Reply::ExitNodes(e) => serde_json::to_value(e),
        Reply::Dns(d) => serde_json::to_value(d),
        Reply::Netcheck(n) => serde_json::to_value(n),
        Reply::Ping(p) => serde_json::to_value(p),
        Reply::Done { message } => Ok(serde_json::json!({ "message": message })),
    };
    value
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| "{}".into())
}

fn path(p: PathKind) -> &'static str {
    match p {
        PathKind::Direct => "direct",
        PathKind::Relay => "relay",
        PathKind::None => "none",
    }
}

/// Human-readable text.
pub fn text(reply: &Reply) -> String {
    let mut out = String::new();
    match reply {
        Reply::Status(s) => {
            let _ = writeln!(out, "state:      {}", s.state.as_str());
            if let Some(me) = &s.self_node {
                let _ = writeln!(
                    out,
                    "self:       {} {} ({})",
                    me.name, me.tunnel_ip, me.dns_name
                );
            }
            let _ = writeln!(out, "generation: {}", s.generation);
            let _ = writeln!(
                out,
                "exit node:  {}",
                s.exit_node.as_deref().unwrap_or("none")
            );
            let _ = writeln!(
                out,
                "lan access: {}",
                if s.lan_access { "on" } else { "off" }
            );
            let _ = writeln!(
                out,
                "kill switch: {}   protected DNS: {}",
                if s.kill_switch { "on" } else { "off" },
                if s.dns_protected { "on" } else { "off" }
            );
            let _ = writeln!(out, "engine:     {}", s.backend);
            if !s.dns_mode.is_empty() {
                let _ = writeln!(out, "host DNS:   {}", s.dns_mode);
            }
            if let Some(e) = &s.error {
                let _ = writeln!(out, "error:      {e}");
            }
            let _ = writeln!(out, "peers:");
            for p in &s.peers {
                let hs = p
                    .last_handshake_secs
                    .map_or("-".into(), |s| format!("{s}s ago"));
                let _ = writeln!(
                    out,
                    "  {:<20} {:<15} {:<7} handshake {:<10} {}{}",
                    p.name,
                    p.tunnel_ip,
                    path(p.path),
                    hs,
                    if p.online { "online" } else { "offline" },
                    if p.exit_node { " exit-node" } else { "" }
                );
            }
        }
        Reply::ExitNodes(list) => {
            if list.is_empty() {
                out.push_str("no exit nodes available to this node\n");
            }
            for e in list {
                let _ = writeln!(
                    out,
                    "{} {:<20} {:<15} {}",
                    if e.selected { "*" } else { " " },
                    e.name,
                    e.tunnel_ip,
                    if e.online { "online" } else { "offline" }
                );
            }
        }
        Reply::Dns(d) => {
            let _ = writeln!(out, "resolver:   {} (suffix {})", d.resolver, d.suffix);
            let _ = writeln!(out, "upstream:   {}", d.upstream);
            let _ = writeln!(
                out,
                "protected:  {}",
                if d.protected { "yes" } else { "no" }
            );
            let _ = writeln!(out, "os config:  {}", d.os_config);
            if let Some(x) = &d.explanation {
                let _ = writeln!(out, "{x}");
            }
            for r in &d.records {
                let _ = writeln!(out, "  {:<40} {:<15} {}", r.name, r.ip, r.why);
            }
        }
        Reply::Netcheck(n) => {
            let _ = writeln!(
                out,
                "udp:               {}",
                if n.udp { "ok" } else { "unavailable" }
            );
            let eps: Vec<String> = n.local_endpoints.iter().map(ToString::to_string).collect();
            let _ = writeln!(out, "local endpoints:   {}", eps.join(", "));
            let _ = writeln!(
                out,
                "control reachable: {}",
                if n.control_reachable {
                    "yes (TLS 1.3)"
                } else {
                    "no"
                }
            );
            let _ = writeln!(out, "direct peers:      {}", n.direct_peers);
        }
        Reply::Ping(p) => match p.rtt_us {
            Some(us) => {
                let _ = writeln!(
                    out,
                    "pong from {} ({}) via {} in {:.2} ms",
                    p.name,
                    p.tunnel_ip,
                    path(p.path),
                    us as f64 / 1000.0
                );
            }
            None => {
                let _ = writeln!(out, "no reply from {} ({})", p.name, p.tunnel_ip);
            }
        },
        Reply::Done { message } => {
            let _ = writeln!(out, "{message}");
        }
    }
    out
}
