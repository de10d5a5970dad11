//! Policy files in HuJSON (JSON for humans, as Tailscale's ACL files are):
//! `//` and `/* */` comments and trailing commas. [`to_json`] turns such a
//! text into plain JSON by overwriting each comment and each trailing comma
//! with spaces (newlines kept), so serde's line and column numbers still
//! point into the file the administrator wrote. Plain JSON passes unchanged.
//!
//! A small scanner instead of a crate: the grammar is three rules, and the
//! JSON parser that follows still checks everything else.

use crate::error::PolicyError;

/// Plain JSON from HuJSON text, positions preserved. An unterminated block
/// comment is an error (the rest of the file would silently vanish).
pub(crate) fn to_json(text: &str) -> Result<String, PolicyError> {
    let mut out = text.as_bytes().to_vec();
    blank_comments(&mut out)?;
    blank_trailing_commas(&mut out);
    // Only ASCII bytes and whole comments (every byte of a multi-byte
    // character inside them) were overwritten with ASCII spaces.
    String::from_utf8(out).map_err(|_| PolicyError::Json {
        line: 1,
        column: 1,
        message: "not UTF-8 after removing comments".into(),
    })
}

fn blank(b: &mut u8) {
    if *b != b'\n' {
        *b = b' ';
    }
}

/// Index just past the string starting at `i` (a `"`), or the end.
fn skip_string(bytes: &[u8], mut i: usize) -> usize {
    i += 1;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    bytes.len()
}

fn blank_comments(bytes: &mut [u8]) -> Result<(), PolicyError> {
    let mut i = 0;
    while i < bytes.len() {
        match (bytes[i], bytes.get(i + 1)) {
            (b'"', _) => i = skip_string(bytes, i),
            (b'/', Some(b'/')) => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    blank(&mut bytes[i]);
                    i += 1;
                }
            }
            (b'/', Some(b'*')) => {
                let start = i;
                let end = bytes[i + 2..]
                    .windows(2)
                    .position(|w| w == b"*/")
                    .map(|p| i + 2 + p + 2)
                    .ok_or_else(|| unterminated(bytes, start))?;
                bytes[i..end].iter_mut().for_each(blank);
                i = end;
            }
            _ => i += 1,
        }
    }
    Ok(())
}

fn unterminated(bytes: &[u8], at: usize) -> PolicyError {
    let before = &bytes[..at];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let column = at
        - before
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |p| p + 1)
        + 1;
    PolicyError::Json {
        line,
        column,
        message: "unterminated /* comment".into(),
    }
}

/// Blanks each `,` that follows a value and whose next non-space character
/// closes an object or array (comments are already spaces). A comma after
/// `[`, `{`, `:` or another comma stays, for the JSON parser to refuse.
fn blank_trailing_commas(bytes: &mut [u8]) {
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => i = skip_string(bytes, i),
            b',' => {
                let next = bytes[i + 1..]
                    .iter()
                    .find(|b| !b.is_ascii_whitespace())
                    .copied();
                let prev = bytes[..i]
                    .iter()
                    .rfind(|b| !b.is_ascii_whitespace())
                    .copied();
                let after_value = !matches!(prev, None | Some(b'[' | b'{' | b',' | b':'));
                if after_value && matches!(next, Some(b'}' | b']')) {
                    bytes[i] = b' ';
                }
                i += 1;
            }
            _ => i += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn comments_and_trailing_commas_become_spaces() {
        let text =
            "{\n  // who may ssh\n  \"a\": [1, 2,], /* inline */\n  \"b\": {\"c\": 3,},\n}\n";
        let json = to_json(text).unwrap();
        assert_eq!(json.len(), text.len());
        assert_eq!(json.lines().count(), text.lines().count());
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v, serde_json::json!({"a": [1, 2], "b": {"c": 3}}));
    }

    #[test]
    fn strings_are_left_alone() {
        let text = r#"{"url": "http://x//y", "s": "/* no */", "q": "a\",]", "t": ",]"}"#;
        assert_eq!(to_json(text).unwrap(), text);
    }

    #[test]
    fn plain_json_is_unchanged_and_positions_survive() {
        let text = "{\"a\": 1}";
        assert_eq!(to_json(text).unwrap(), text);
        // An error after a comment is reported where it is in the file.
        let json = to_json("{ /* é */\n  \"a\": }").unwrap();
        let err = serde_json::from_str::<serde_json::Value>(&json).unwrap_err();
        assert_eq!(err.line(), 2);
    }

    #[test]
    fn unterminated_block_comment_is_refused() {
        let err = to_json("{\n  \"a\": 1 /* open\n}").unwrap_err();
        assert!(
            matches!(
                err,
                PolicyError::Json {
                    line: 2,
                    column: 10,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn a_lone_comma_is_not_made_valid() {
        // Only a comma after a value is trailing; the JSON parser still
        // refuses the others.
        for bad in ["[1,,]", "[,]", "{,}", "{\"a\":,}"] {
            let json = to_json(bad).unwrap();
            assert!(
                serde_json::from_str::<serde_json::Value>(&json).is_err(),
                "{bad}"
            );
        }
    }
}
