//! Magic DNS label assignment.
//!
//! The first node to enroll with a hostname keeps it; later ones get `-2`,
//! `-3`, ... in enrollment order. The choice is made inside the enrollment
//! transaction (single writer) and persisted, so a name never moves from one
//! node to another.

/// The label for a node requesting `requested`, given which labels are taken.
/// Returns `None` only if every candidate up to a large bound is taken.
pub fn assign_label(requested: &str, mut is_taken: impl FnMut(&str) -> bool) -> Option<String> {
    if !is_taken(requested) {
        return Some(requested.to_owned());
    }
    (2..100_000u32)
        .map(|n| format!("{requested}-{n}"))
        .find(|candidate| !is_taken(candidate))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn first_keeps_name_then_numbered() {
        let mut taken = HashSet::new();
        let mut got = vec![];
        for _ in 0..4 {
            let label = assign_label("web", |l| taken.contains(l)).unwrap();
            taken.insert(label.clone());
            got.push(label);
        }
        assert_eq!(got, ["web", "web-2", "web-3", "web-4"]);
    }

    #[test]
    fn fills_gaps_without_renaming_others() {
        let taken: HashSet<&str> = ["web", "web-3"].into();
        assert_eq!(assign_label("web", |l| taken.contains(l)).unwrap(), "web-2");
    }

    #[test]
    fn a_literal_numbered_request_is_its_own_name() {
        // "web-2" asked for explicitly while "web-2" is free gets it; a later
        // duplicate of "web" then skips it.
        let taken: HashSet<&str> = ["web", "web-2"].into();
        assert_eq!(assign_label("web", |l| taken.contains(l)).unwrap(), "web-3");
    }
}
