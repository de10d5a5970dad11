//! Building DNS responses with hickory-proto: the skeleton every reply shares,
//! error replies for queries that only half parse, and truncation to the
//! size a client can receive.

use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

/// TTL of Magic DNS records and of negative answers from our zones: short, so
/// a renamed or removed node stops resolving within a minute.
pub const MAGIC_TTL: u32 = 60;

/// The UDP payload size this resolver advertises in EDNS (the 2020 DNS flag
/// day value: no IP fragmentation on common paths).
pub const EDNS_PAYLOAD: u16 = 1232;

/// Smallest UDP payload every DNS client accepts (RFC 1035).
pub const MIN_UDP_PAYLOAD: u16 = 512;

/// Largest DNS message on any transport (TCP length prefix).
pub const MAX_MESSAGE: usize = u16::MAX as usize;

/// A SERVFAIL response to `query`, echoing its id (and question when it
/// parses). `None` for input that is not a query at all (shorter than a
/// header, or a response): such packets are dropped, never answered.
pub fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    error_response(query, ResponseCode::ServFail)
}

/// A REFUSED response to `query` (for clients the access check turns away).
/// `None` under the same conditions as [`servfail`].
pub fn refused(query: &[u8]) -> Option<Vec<u8>> {
    error_response(query, ResponseCode::Refused)
}

/// Makes `response` fit in `limit` bytes: unchanged when it does, otherwise
/// header, question and OPT with the TC bit set so the client retries over
/// TCP (RFC 1035 4.2.1, RFC 7766).
pub fn fit(response: Vec<u8>, limit: usize) -> Vec<u8> {
    if response.len() <= limit {
        return response;
    }
    let truncated = Message::from_vec(&response)
        .ok()
        .map(|message| message.truncate())
        .and_then(|message| encode(&message))
        .filter(|bytes| bytes.len() <= limit);
    if let Some(bytes) = truncated {
        return bytes;
    }
    // Not even the question fits (or the response does not parse): a bare
    // header still tells the client to retry over TCP.
    let mut header_only = Message::response(read_id(&response), OpCode::Query);
    header_only.metadata.truncation = true;
    encode(&header_only).unwrap_or_default()
}

/// Reads the 12-byte header, the one part of a packet every reply needs.
pub(crate) fn read_header(packet: &[u8]) -> Option<Header> {
    Header::read(&mut BinDecoder::new(packet)).ok()
}

/// The skeleton of a reply to a parsed request: id, opcode, RD/CD copied,
/// RA set (this resolver recurses on the client's behalf), the question
/// echoed with the client's spelling, and OPT when the client sent one.
pub(crate) fn reply(request: &Message, rcode: ResponseCode, authoritative: bool) -> Message {
    let mut message = Message::response(request.id, request.op_code);
    message.metadata.recursion_desired = request.recursion_desired;
    message.metadata.checking_disabled = request.checking_disabled;
    message.metadata.recursion_available = true;
    message.metadata.authoritative = authoritative;
    message.metadata.response_code = rcode;
    message.add_queries(request.queries.iter().cloned());
    if request.edns.is_some() {
        message.set_edns(our_edns());
    }
    message
}

/// A reply to a request of which only the header is usable.
pub(crate) fn header_reply(header: &Header, rcode: ResponseCode) -> Option<Vec<u8>> {
    let mut message = Message::error_msg(header.id, header.op_code, rcode);
    message.metadata.recursion_desired = header.recursion_desired;
    message.metadata.recursion_available = true;
    encode(&message)
}

/// Serialises a message; `None` only if hickory refuses to encode it.
pub(crate) fn encode(message: &Message) -> Option<Vec<u8>> {
    message
        .to_vec()
        .ok()
        .filter(|bytes| bytes.len() <= MAX_MESSAGE)
}

/// The UDP payload a request's sender accepts: 512, or its EDNS size.
pub(crate) fn udp_limit(request: &Message) -> u16 {
    request.max_payload().max(MIN_UDP_PAYLOAD)
}

fn our_edns() -> Edns {
    let mut edns = Edns::new();
    edns.set_max_payload(EDNS_PAYLOAD);
    edns.set_version(0);
    edns
}

fn error_response(query: &[u8], rcode: ResponseCode) -> Option<Vec<u8>> {
    let header = read_header(query)?;
    if header.message_type == MessageType::Response {
        return None;
    }
    if header.op_code == OpCode::Query
        && header.counts.queries == 1
        && let Ok(request) = Message::from_vec(query)
    {
        return encode(&reply(&request, rcode, false));
    }
    header_reply(&header, rcode)
}

fn read_id(packet: &[u8]) -> u16 {
    read_header(packet).map_or(0, |header| header.id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::{Name, RData, Record, RecordType, rdata::A};
    use std::net::Ipv4Addr;

    fn query(name: &str) -> Message {
        let mut message = Message::new(0x1234, MessageType::Query, OpCode::Query);
        message.metadata.recursion_desired = true;
        message.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
        message
    }

    #[test]
    fn servfail_and_refused_echo_id_and_question() {
        let bytes = query("Example.COM.").to_vec().unwrap();
        for (bytes, rcode) in [
            (servfail(&bytes).unwrap(), ResponseCode::ServFail),
            (refused(&bytes).unwrap(), ResponseCode::Refused),
        ] {
            let reply = Message::from_vec(&bytes).unwrap();
            assert_eq!(reply.id, 0x1234);
            assert_eq!(reply.response_code, rcode);
            assert_eq!(reply.message_type, MessageType::Response);
            assert!(reply.recursion_desired);
            assert_eq!(reply.queries[0].name().to_ascii(), "Example.COM.");
        }
    }

    #[test]
    fn error_responses_never_answer_responses_or_short_packets() {
        let mut response = query("example.com.");
        response.metadata.message_type = MessageType::Response;
        assert!(servfail(&response.to_vec().unwrap()).is_none());
        assert!(servfail(&[0u8; 11]).is_none());
        // A header alone still gets an answer with the id echoed.
        let reply =
            Message::from_vec(&servfail(&[0xab, 0xcd, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]).unwrap())
                .unwrap();
        assert_eq!(reply.id, 0xabcd);
        assert!(reply.queries.is_empty());
    }

    #[test]
    fn fit_truncates_with_tc_and_keeps_question() {
        let request = query("big.example.");
        let mut response = reply(&request, ResponseCode::NoError, false);
        for i in 0..100u8 {
            response.add_answer(Record::from_rdata(
                Name::from_ascii("big.example.").unwrap(),
                60,
                RData::A(A(Ipv4Addr::new(192, 0, 2, i))),
            ));
        }
        let bytes = response.to_vec().unwrap();
        assert!(bytes.len() > 512);
        assert_eq!(fit(bytes.clone(), 4096), bytes);
        let small = fit(bytes, 512);
        assert!(small.len() <= 512);
        let parsed = Message::from_vec(&small).unwrap();
        assert!(parsed.truncation);
        assert!(parsed.answers.is_empty());
        assert_eq!(parsed.id, 0x1234);
        assert_eq!(parsed.queries.len(), 1);
        // A limit below the question size still yields a parseable TC header.
        let tiny = fit(response.to_vec().unwrap(), 12);
        let parsed = Message::from_vec(&tiny).unwrap();
        assert!(parsed.truncation);
        assert_eq!(parsed.id, 0x1234);
    }
}
