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
        Reply::RouteExplain(d) => serde_json::to_value(d),
        Reply::AclExplain(d) => serde_json::to_value(d),
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

/// The control line of `status`: the URL in use (or none), and with
/// several URLs the others and how often the stream moved between them.
fn control_line(c: &rustynet_proto::ipc::ControlView) -> String {
    let mut line = match &c.in_use {
        Some(url) => url.clone(),
        None => "not connected".to_owned(),
    };
    if c.urls.len() > 1 {
        let others: Vec<&str> = c
            .urls
            .iter()
            .map(String::as_str)
            .filter(|u| c.in_use.as_deref() != Some(*u))
            .collect();
        let _ = write!(
            line,
            " (also {}; failovers: {})",
            others.join(", "),
            c.failovers
        );
    }
    line
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
                "exit LAN:   {}   local LAN: {}",
                if s.lan_access { "on" } else { "off" },
                if s.local_lan { "on" } else { "off" }
            );
            if s.lockdown {
                let _ = writeln!(out, "lockdown:   on (only the tunnel carries traffic)");
            }
            let _ = writeln!(
                out,
                "kill switch: {}   protected DNS: {}",
                if s.kill_switch { "on" } else { "off" },
                if s.dns_protected { "on" } else { "off" }
            );
            if !s.control.urls.is_empty() {
                let _ = writeln!(out, "control:    {}", control_line(&s.control));
            }
            let _ = writeln!(out, "engine:     {}", s.backend);
            if !s.dns_mode.is_empty() {
                let _ = writeln!(out, "host DNS:   {}", s.dns_mode);
            }
            if let Some(e) = &s.error {
                let _ = writeln!(out, "error:      {e}");
            }
            for r in &s.relays {
                let _ = writeln!(
                    out,
                    "relay:      {}{} {}",
                    r.name,
                    if r.home { " (home)" } else { "" },
                    match (r.connected, r.rtt_us) {
                        (true, Some(us)) => format!(
                            "connected, {:.1} ms, {}",
                            us as f64 / 1000.0,
                            if r.udp { "udp" } else { "tls only" }
                        ),
                        (true, None) => "connected".into(),
                        (false, _) =>
                            format!("down: {}", r.error.as_deref().unwrap_or("connecting")),
                    }
                );
            }
            let _ = writeln!(out, "peers:");
            out.push_str(&crate::table::peers(&s.peers));
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
            for m in &n.mapped {
                let _ = writeln!(
                    out,
                    "mapped address:    {} (seen by {}, {:.1} ms)",
                    m.mapped,
                    m.server,
                    m.rtt_us as f64 / 1000.0
                );
            }
            let varies = match n.mapping_varies_by_destination {
                Some(true) => "yes",
                Some(false) => "no",
                None => "unknown",
            };
            let _ = writeln!(out, "mapping varies by destination: {varies}");
            let _ = writeln!(out, "NAT:               {}", n.nat.replace('_', "-"));
            for r in &n.relays {
                let _ = writeln!(
                    out,
                    "relay {:<12} {}{}",
                    r.name,
                    r.rtt_us.map_or("unreachable".into(), |us| format!(
                        "{:.1} ms",
                        us as f64 / 1000.0
                    )),
                    if n.preferred_relay.as_deref() == Some(r.name.as_str()) {
                        " (preferred)"
                    } else {
                        ""
                    }
                );
            }
            let _ = writeln!(
                out,
                "peers:             {} direct, {} via relay",
                n.direct_peers, n.relay_peers
            );
            let _ = writeln!(out, "took:              {} ms", n.took_ms);
        }
        Reply::Ping(p) => out.push_str(&ping_line(p)),
        Reply::RouteExplain(d) => out.push_str(&crate::explain::route_text(d)),
        Reply::AclExplain(d) => out.push_str(&crate::explain::acl_text(d)),
        Reply::Done { message } => {
            let _ = writeln!(out, "{message}");
        }
    }
    out
}

/// One line per ping: the path the answer came back on.
pub fn ping_line(p: &rustynet_proto::ipc::PingDoc) -> String {
    let Some(us) = p.rtt_us else {
        return format!("no reply from {} ({})\n", p.name, p.tunnel_ip);
    };
    let ms = us as f64 / 1000.0;
    let via = match (p.path, p.via.as_deref()) {
        (PathKind::Relay, Some(relay)) => format!("via relay {relay}"),
        (PathKind::Direct, Some(addr)) => format!("via {addr} direct"),
        (kind, _) => format!("via {}", path(kind)),
    };
    format!(
        "pong from {} ({}) {via} in {ms:.1} ms\n",
        p.name, p.tunnel_ip
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustynet_proto::ipc::ControlView;

    #[test]
    fn the_control_line_names_the_url_in_use_and_the_failovers() {
        let mut c = ControlView {
            urls: vec!["https://a:1".into(), "https://b:1".into()],
            in_use: Some("https://b:1".into()),
            failovers: 2,
        };
        assert_eq!(
            control_line(&c),
            "https://b:1 (also https://a:1; failovers: 2)"
        );
        c.in_use = None;
        assert!(control_line(&c).starts_with("not connected (also https://a:1, https://b:1"));
        c.urls.truncate(1);
        c.in_use = Some("https://a:1".into());
        assert_eq!(control_line(&c), "https://a:1");
    }
}
