//! The peers of `status` as a table whose columns are as wide as their
//! widest cell, so long host names and IPv6 endpoints never push the
//! columns out of line.

use rustynet_proto::ipc::{PathKind, PeerStatus};

const HEADERS: [&str; 8] = [
    "NAME",
    "TUNNEL IP",
    "PATH",
    "VIA",
    "HANDSHAKE",
    "RX",
    "TX",
    "",
];

/// Seconds as a short age: `42s`, `3m10s`, `2h5m`, `3d4h`.
pub fn age(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 86_400 => format!("{}h{}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// Bytes in binary units: `512 B`, `1.5 KiB`, `3.2 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

fn row(p: &PeerStatus) -> [String; 8] {
    let kind = match p.path {
        PathKind::Direct => "direct",
        PathKind::Relay => "relay",
        PathKind::None => "none",
    };
    // How long the path has held, beside it (`--json` also says why it
    // last changed).
    let path = match (p.path, p.path_secs) {
        (PathKind::None, _) | (_, None) => kind.to_owned(),
        (_, Some(secs)) => format!("{kind} {}", age(secs)),
    };
    let mut flags = Vec::new();
    if !p.online {
        flags.push("offline");
    }
    if p.exit_node {
        flags.push("exit-node");
    }
    [
        p.name.clone(),
        p.tunnel_ip.to_string(),
        path,
        p.via.clone().unwrap_or_else(|| "-".into()),
        p.last_handshake_secs
            .map_or("-".into(), |s| format!("{} ago", age(s))),
        bytes(p.rx_bytes),
        bytes(p.tx_bytes),
        flags.join(","),
    ]
}

/// The peer table; empty input gives a single "no peers" line.
pub fn peers(list: &[PeerStatus]) -> String {
    if list.is_empty() {
        return "no peers\n".into();
    }
    let rows: Vec<[String; 8]> = list.iter().map(row).collect();
    let mut widths = HEADERS.map(str::len);
    for r in &rows {
        for (w, cell) in widths.iter_mut().zip(r) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let header = HEADERS.map(str::to_owned);
    for r in std::iter::once(&header).chain(&rows) {
        let cells: Vec<String> = r
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (cell, w))| {
                // Byte counts line up on the right.
                if i == 5 || i == 6 {
                    format!("{cell:>w$}")
                } else {
                    format!("{cell:<w$}")
                }
            })
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::lookup::tests::peer;

    #[test]
    fn columns_fit_the_longest_cell() {
        let mut long = peer(
            "a-very-long-host-name-that-breaks-fixed-columns",
            [100, 64, 0, 2],
        );
        long.path = PathKind::Direct;
        long.via = Some("[2001:db8::1234:5678]:41641".into());
        long.last_handshake_secs = Some(190);
        long.path_secs = Some(3700);
        long.rx_bytes = 5 * 1024 * 1024 + 300 * 1024;
        long.tx_bytes = 42;
        let mut short = peer("db", [100, 64, 0, 3]);
        short.path = PathKind::Relay;
        short.via = Some("r1".into());
        short.online = false;
        short.exit_node = true;
        let text = peers(&[long, short]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines[0].starts_with("NAME "), "{text}");
        // Every column starts at the same offset on every line.
        for header in ["TUNNEL IP", "PATH", "VIA", "HANDSHAKE"] {
            let col = lines[0].find(header).unwrap();
            assert!(col > "a-very-long-host-name-that-breaks-fixed-columns".len());
            for line in &lines[1..] {
                assert_eq!(&line[col - 2..col], "  ", "{header} in {line:?}\n{text}");
                assert_ne!(line.as_bytes()[col], b' ', "{header} in {line:?}\n{text}");
            }
        }
        assert!(lines[1].contains("[2001:db8::1234:5678]:41641"));
        assert!(lines[1].contains("3m10s ago"));
        assert!(lines[1].contains("direct 1h1m"), "{text}");
        assert!(
            lines[1].contains("5.3 MiB") && lines[1].contains("42 B"),
            "{text}"
        );
        assert!(
            lines[2].contains("relay") && lines[2].ends_with("offline,exit-node"),
            "{text}"
        );
        // Byte counts are right-aligned under their header.
        let rx_end = lines[0].find("RX").unwrap() + 2;
        assert_eq!(lines[1].find("5.3 MiB").unwrap() + "5.3 MiB".len(), rx_end);
        assert_eq!(
            lines[2].find("0 B").unwrap() + "0 B".len(),
            rx_end,
            "{text}"
        );
    }

    #[test]
    fn ages_and_sizes() {
        assert_eq!(age(0), "0s");
        assert_eq!(age(59), "59s");
        assert_eq!(age(61), "1m1s");
        assert_eq!(age(7500), "2h5m");
        assert_eq!(age(3 * 86_400 + 4 * 3600), "3d4h");
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 * 1024 * 1024 * 1024), "3.0 GiB");
        assert_eq!(peers(&[]), "no peers\n");
    }
}
