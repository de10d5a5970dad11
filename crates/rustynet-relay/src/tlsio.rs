//! Driving a rustls connection by hand over a nonblocking socket, shared by
//! the server (tokio) and the client (mio) shells.
//!
//! Ciphertext is read from the socket in large chunks by the caller (one
//! syscall per up to 64 KiB instead of rustls' 4 KiB steps) and fed here;
//! plaintext is appended straight to the caller's frame buffer.

use std::io::{self, BufRead as _, Write};

use bytes::BytesMut;
use rustls::ConnectionCommon;

/// Size of the chunk a shell reads from its socket at once.
pub(crate) const READ_CHUNK: usize = 64 * 1024;

/// Feeds received ciphertext to `conn` and appends the plaintext to `plain`.
/// Returns true once the peer has closed the TLS session.
pub(crate) fn feed<D>(
    conn: &mut ConnectionCommon<D>,
    mut cipher: &[u8],
    plain: &mut BytesMut,
) -> io::Result<bool> {
    let mut closed = false;
    while !cipher.is_empty() {
        conn.read_tls(&mut cipher)?;
        let state = conn
            .process_new_packets()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        closed |= state.peer_has_closed();
        let mut reader = conn.reader();
        loop {
            let n = match reader.fill_buf() {
                Ok([]) => break,
                Ok(chunk) => {
                    plain.extend_from_slice(chunk);
                    chunk.len()
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            };
            reader.consume(n);
        }
    }
    Ok(closed)
}

/// Writes as much pending ciphertext as the socket takes. `Ok(())` with
/// `conn.wants_write()` still true means the socket is full.
pub(crate) fn flush<D>(conn: &mut ConnectionCommon<D>, socket: &mut dyn Write) -> io::Result<()> {
    while conn.wants_write() {
        match conn.write_tls(socket) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The session's login exporter (RFC 8446 §7.5, label
/// [`crate::login::EXPORTER_LABEL`], no context).
pub(crate) fn exporter<D>(conn: &ConnectionCommon<D>) -> io::Result<[u8; 32]> {
    conn.export_keying_material([0u8; 32], crate::login::EXPORTER_LABEL, None)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}
