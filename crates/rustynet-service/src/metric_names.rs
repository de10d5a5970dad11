//! Metric names on both sides of a dashboard or alert rule: the sample
//! names a Prometheus text exposition carries, and the `rustynet_…` names
//! a rules file or dashboard uses. The daemon's, control's and relay's
//! tests check with these that every shipped rule and panel names a metric
//! that really exists.

/// Sample names `exposition` can carry, from its `# TYPE` lines (a counter
/// `x` is sampled as `x_total`, a histogram as `x_bucket`, `x_sum`,
/// `x_count`).
pub fn exposed(exposition: &str) -> Vec<String> {
    let mut names = Vec::new();
    for (name, kind) in exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_once(' '))
    {
        match kind {
            "counter" => names.push(format!("{name}_total")),
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.push(format!("{name}{suffix}"));
                }
            }
            _ => names.push(name.to_owned()),
        }
    }
    names
}

/// Every whole word of `text` that starts with `prefix` (e.g.
/// `rustynet_relay_`).
pub fn used(text: &str, prefix: &str) -> Vec<String> {
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(prefix) {
        let boundary = !rest[..at].chars().next_back().is_some_and(word);
        let tail = &rest[at..];
        let len = tail.find(|c: char| !word(c)).unwrap_or(tail.len());
        if boundary {
            out.push(tail[..len].to_owned());
        }
        rest = &tail[len..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_on_both_sides() {
        let text =
            "# TYPE rustynet_a counter\n# TYPE rustynet_h histogram\n# TYPE rustynet_g gauge\n";
        assert_eq!(
            exposed(text),
            [
                "rustynet_a_total",
                "rustynet_h_bucket",
                "rustynet_h_sum",
                "rustynet_h_count",
                "rustynet_g"
            ]
        );
        let rule = "expr: rate(rustynet_a_total[5m]) > 0 and xrustynet_b and rustynet_relay_c";
        assert_eq!(
            used(rule, "rustynet_"),
            ["rustynet_a_total", "rustynet_relay_c"]
        );
        assert_eq!(used(rule, "rustynet_relay_"), ["rustynet_relay_c"]);
    }
}
