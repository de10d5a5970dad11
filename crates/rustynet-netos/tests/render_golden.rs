//! Golden test for the JSON the firewall hands to `nft -j -f -` (no root).
//! The same ruleset is applied for real in `netns_firewall.rs`.

#![allow(clippy::expect_used, clippy::panic)] // test code fails loudly by design

mod common;

use rustynet_netos::render_ruleset;

const GOLDEN: &str = "tests/golden/representative_ruleset.json";

#[test]
fn representative_ruleset_renders_to_golden_json() {
    let rendered =
        render_ruleset(&common::representative_ruleset("rustynet")).expect("valid ruleset");
    let pretty = serde_json::to_string_pretty(&rendered).expect("serialize") + "\n";
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(GOLDEN);
    if std::env::var_os("RUSTYNET_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &pretty).expect("write golden");
    }
    let golden = std::fs::read_to_string(&path).expect("golden file present");
    assert_eq!(
        pretty, golden,
        "rendering changed; review and rerun with RUSTYNET_UPDATE_GOLDEN=1"
    );
}
