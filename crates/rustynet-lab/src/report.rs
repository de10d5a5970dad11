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

/// What a case observed while it ran, for its record.
#[derive(Debug, Default)]
pub struct Evidence {
    details: serde_json::Map<String, serde_json::Value>,
    /// Packets of interest (leak cases: packets that escaped).
    pub packets: Option<usize>,
}

impl Evidence {
    /// Records one observation.
    pub fn set(&mut self, key: &str, value: impl Serialize) {
        self.details.insert(
            key.to_owned(),
            serde_json::to_value(value).unwrap_or(serde_json::Value::Null),
        );
    }
}

/// Runs one case body and writes its record: pass or fail, the wall time,
/// the error. A panic inside counts as a failure and comes back as an error,
/// so a record is written whatever happens.
pub fn run_recorded<T>(
    report: &'static str,
    case: &str,
    body: impl FnOnce(&mut Evidence) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let started = std::time::Instant::now();
    let mut ev = Evidence::default();
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| body(&mut ev)))
        .unwrap_or_else(|p| {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            Err(anyhow::anyhow!("panicked: {msg}"))
        });
    let mut details = std::mem::take(&mut ev.details);
    details.insert(
        "wall_secs".into(),
        serde_json::json!((started.elapsed().as_secs_f64() * 10.0).round() / 10.0),
    );
    if let Err(e) = &result {
        details.insert("error".into(), serde_json::json!(format!("{e:#}")));
    }
    record(
        report,
        case,
        result.is_ok(),
        ev.packets,
        serde_json::Value::Object(details),
    );
    result
}
