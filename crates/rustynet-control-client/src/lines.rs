//! Line splitting of the map stream.

use bytes::{Bytes, BytesMut};

use super::{ClientError, MAX_FRAME_BYTES};

/// Splits a byte stream into lines. Each byte is searched for the newline
/// once: a large frame arriving in many small chunks costs time linear
/// in its size, not quadratic (the search resumes where the last one
/// stopped instead of rescanning the buffer from its start).
#[derive(Debug, Default)]
pub struct LineBuffer {
    buf: BytesMut,
    /// Bytes of `buf` already searched (none of them is a newline).
    searched: usize,
    #[cfg(test)]
    pub(crate) work: usize,
}

impl LineBuffer {
    /// Appends received bytes.
    pub fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete line without its newline, if one is buffered;
    /// an error once a line grows past [`MAX_FRAME_BYTES`].
    pub fn next_line(&mut self) -> Result<Option<Bytes>, ClientError> {
        let fresh = &self.buf[self.searched..];
        #[cfg(test)]
        {
            self.work += fresh.len();
        }
        match fresh.iter().position(|b| *b == b'\n') {
            Some(at) => {
                let end = self.searched + at;
                let mut line = self.buf.split_to(end + 1);
                line.truncate(end);
                self.searched = 0;
                Ok(Some(line.freeze()))
            }
            None => {
                self.searched = self.buf.len();
                if self.buf.len() > MAX_FRAME_BYTES {
                    return Err(ClientError::Protocol("stream frame too large".into()));
                }
                Ok(None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_line_in_small_chunks_is_searched_once() {
        let total = 4 * 1024 * 1024;
        let mut lines = LineBuffer::default();
        let chunk = vec![b'x'; 64];
        for _ in 0..total / 64 {
            lines.push(&chunk);
            assert_eq!(lines.next_line().unwrap(), None);
        }
        lines.push(b"\n{}\n");
        assert_eq!(lines.next_line().unwrap().map(|l| l.len()), Some(total));
        assert_eq!(lines.next_line().unwrap().as_deref(), Some(&b"{}"[..]));
        assert_eq!(lines.next_line().unwrap(), None);
        // Every byte searched once (plus the short tail twice at most);
        // rescanning from the start would be ~total²/128 = 1.4e11.
        assert!(lines.work <= total + 8, "searched {} bytes", lines.work);
    }

    #[test]
    fn several_lines_in_one_chunk_and_a_line_split_across_chunks() {
        let mut lines = LineBuffer::default();
        lines.push(b"a\nbb\ncc");
        assert_eq!(lines.next_line().unwrap().as_deref(), Some(&b"a"[..]));
        assert_eq!(lines.next_line().unwrap().as_deref(), Some(&b"bb"[..]));
        assert_eq!(lines.next_line().unwrap(), None);
        lines.push(b"c\n");
        assert_eq!(lines.next_line().unwrap().as_deref(), Some(&b"ccc"[..]));
    }

    #[test]
    fn a_line_past_the_limit_is_refused() {
        let mut lines = LineBuffer::default();
        lines.push(&vec![b'x'; MAX_FRAME_BYTES + 1]);
        assert!(matches!(lines.next_line(), Err(ClientError::Protocol(_))));
    }
}
