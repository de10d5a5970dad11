//! Evidence from end-to-end runs: each test case writes one JSON record under
//! `artifacts/phase10/cases/`; the phase 10 gate merges them into the
//! reports. Every figure comes from the run (packet counts, observed
//! addresses), never from a constant.

use std::path::PathBuf;

use serde::Serialize;

/// One case's evidence.
#[derive(Debug, Clone, Serialize)]
pub struct CaseRecord {
    /// Report it belongs to (`netns_e2e` or `leak`).
    pub report: &'static str,
    /// Case name.
    pub case: String,
    /// `pass` or `fail`.
    pub verdict: &'static str,
    /// Packets of interest captured (leak cases: packets that escaped).
    pub packets_captured: Option<usize>,
    /// What was observed.
    pub details: serde_json::Value,
}

fn cases_dir() -> PathBuf {
    let root = std::env::var_os("RUSTYNET_ARTIFACTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../artifacts")));
    root.join("phase10").join("cases")
}

/// Writes a case record (best effort: evidence must not fail a test).
pub fn record(
    report: &'static str,
    case: &str,
    pass: bool,
    packets: Option<usize>,
    details: serde_json::Value,
) {
    let rec = CaseRecord {
        report,
        case: case.to_owned(),
        verdict: if pass { "pass" } else { "fail" },
        packets_captured: packets,
        details,
    };
    let dir = cases_dir();
    if std::fs::create_dir_all(&dir).is_ok() {
        let name: String = case
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let _ = std::fs::write(
            dir.join(format!("{report}-{name}.json")),
            serde_json::to_vec_pretty(&rec).unwrap_or_default(),
        );
    }
}
