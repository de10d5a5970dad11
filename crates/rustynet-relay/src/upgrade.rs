//! The HTTP/1.1 upgrade in front of the frame stream, so a relay on 443
//! passes proxies and firewalls that only allow HTTPS. Pure: parses and
//! builds heads; the server and client shells do the reading and writing.

/// The path clients upgrade on.
pub const RELAY_PATH: &str = "/relay/v1";
/// The health endpoint operators and load balancers poll.
pub const HEALTH_PATH: &str = "/healthz";
/// The `Upgrade` token.
pub const UPGRADE_TOKEN: &str = "rustynet-relay/1";
/// Largest request or response head read.
pub const MAX_HEAD: usize = 8 * 1024;
const MAX_HEADERS: usize = 32;

/// What the server does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Switch to the relay protocol.
    Relay,
    /// Answer 200 and close.
    Health,
    /// Answer with this error status and close.
    Reject(u16),
}

/// Why a head could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeError {
    /// The head is longer than [`MAX_HEAD`].
    #[error("HTTP head longer than {MAX_HEAD} bytes")]
    TooLarge,
    /// Not valid HTTP/1.1.
    #[error("malformed HTTP head")]
    Malformed,
    /// The server did not switch protocols (its status code).
    #[error("relay answered HTTP {0} instead of switching protocols")]
    Refused(u16),
}

fn header<'a>(headers: &'a [httparse::Header<'_>], name: &str) -> Option<&'a [u8]> {
    headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case(name))
        .map(|h| h.value)
}

fn has_token(value: Option<&[u8]>, token: &str) -> bool {
    value.is_some_and(|v| {
        v.split(|b| *b == b',')
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// Parses a request head from the start of `buf`. `Ok(None)`: incomplete
/// (read more, unless `buf` already holds [`MAX_HEAD`] bytes). `Ok(Some)`
/// gives the route and the head's length; bytes after it are frames.
pub fn parse_request(buf: &[u8]) -> Result<Option<(Route, usize)>, UpgradeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(UpgradeError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(UpgradeError::Malformed),
    };
    if len > MAX_HEAD {
        return Err(UpgradeError::TooLarge);
    }
    let route = match (req.method, req.path) {
        (Some("GET"), Some(RELAY_PATH)) => {
            let upgrade = has_token(header(req.headers, "upgrade"), UPGRADE_TOKEN);
            let connection = has_token(header(req.headers, "connection"), "upgrade");
            if upgrade && connection {
                Route::Relay
            } else {
                Route::Reject(426)
            }
        }
        (Some("GET"), Some(HEALTH_PATH)) => Route::Health,
        (Some("GET"), _) => Route::Reject(404),
        _ => Route::Reject(405),
    };
    Ok(Some((route, len)))
}

/// The server's answer head for a route.
pub fn response(route: Route) -> Vec<u8> {
    match route {
        Route::Relay => format!(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: {UPGRADE_TOKEN}\r\n\r\n"
        )
        .into_bytes(),
        Route::Health => {
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
                .to_vec()
        }
        Route::Reject(status) => {
            let text = match status {
                404 => "Not Found",
                405 => "Method Not Allowed",
                426 => "Upgrade Required",
                _ => "Bad Request",
            };
            format!(
                "HTTP/1.1 {status} {text}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .into_bytes()
        }
    }
}

/// The client's upgrade request to `host` (the Host header's value).
pub fn request(host: &str) -> Vec<u8> {
    format!(
        "GET {RELAY_PATH} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: {UPGRADE_TOKEN}\r\n\r\n"
    )
    .into_bytes()
}

/// Parses the server's answer. `Ok(Some(len))`: switched, frames follow the
/// head's `len` bytes. `Ok(None)`: incomplete.
pub fn parse_response(buf: &[u8]) -> Result<Option<usize>, UpgradeError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut resp = httparse::Response::new(&mut headers);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD => {
            return Err(UpgradeError::TooLarge);
        }
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(UpgradeError::Malformed),
    };
    match resp.code {
        Some(101) if has_token(header(resp.headers, "upgrade"), UPGRADE_TOKEN) => Ok(Some(len)),
        Some(code) => Err(UpgradeError::Refused(code)),
        None => Err(UpgradeError::Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_client_request_is_routed_to_the_relay() {
        let mut req = request("relay.example:443");
        req.extend_from_slice(b"\x01frames");
        let (route, len) = parse_request(&req).unwrap().unwrap();
        assert_eq!(route, Route::Relay);
        assert_eq!(&req[len..], b"\x01frames");
        let resp = response(Route::Relay);
        assert_eq!(parse_response(&resp), Ok(Some(resp.len())));
    }

    #[test]
    fn other_requests_get_plain_answers() {
        let route = |head: &str| parse_request(head.as_bytes()).unwrap().unwrap().0;
        assert_eq!(
            route("GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Health
        );
        assert_eq!(
            route("GET /relay/v1 HTTP/1.1\r\nHost: x\r\n\r\n"),
            Route::Reject(426)
        );
        assert_eq!(
            route(
                "GET /relay/v1 HTTP/1.1\r\nConnection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n\r\n"
            ),
            Route::Reject(426)
        );
        assert_eq!(
            route(
                "GET /relay/v1 HTTP/1.1\r\nconnection: keep-alive, upgrade\r\nupgrade: Rustynet-Relay/1\r\n\r\n"
            ),
            Route::Relay
        );
        assert_eq!(route("GET /x HTTP/1.1\r\n\r\n"), Route::Reject(404));
        assert_eq!(route("POST /relay/v1 HTTP/1.1\r\n\r\n"), Route::Reject(405));
        assert_eq!(
            parse_response(&response(Route::Health)),
            Err(UpgradeError::Refused(200))
        );
        assert_eq!(
            parse_response(&response(Route::Reject(426))),
            Err(UpgradeError::Refused(426))
        );
    }

    #[test]
    fn heads_are_bounded_and_partial_heads_wait() {
        assert_eq!(parse_request(b"GET /relay/v1 HTTP/1.1\r\nHost"), Ok(None));
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.resize(MAX_HEAD, b'a');
        assert_eq!(parse_request(&long), Err(UpgradeError::TooLarge));
        assert_eq!(
            parse_request(b"\x16\x03\x01garbage\r\n\r\n"),
            Err(UpgradeError::Malformed)
        );
    }
}
