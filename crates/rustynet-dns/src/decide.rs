//! The pure query decision: bytes in, a [`Decision`] out, no I/O. The server
//! and the fuzz target both drive [`ResolverConfig::decide`].

use std::net::{IpAddr, SocketAddr};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, PTR, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use crate::answer::{self, MAGIC_TTL};
use crate::config::{ResolverConfig, Upstream};
use crate::zone::{Node, Route, Zone, lower_labels};

/// What to do with one incoming packet.
#[derive(Debug, Clone)]
pub enum Decision {
    /// Send this complete response.
    Answer(Answer),
    /// Ask an upstream resolver; see [`Forward`].
    Forward(Box<Forward>),
    /// Send nothing: the packet is too short to carry an id, or it is a
    /// response (answering responses would make us a reflector).
    Drop,
}

/// A response built locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The encoded response.
    pub bytes: Vec<u8>,
    /// The largest UDP payload the client accepts; pass through [`answer::fit`]
    /// before sending over UDP.
    pub udp_limit: u16,
    /// Why this response was produced, for metrics.
    pub kind: AnswerKind,
}

/// Why a local response was produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AnswerKind {
    /// Answered from our zones (records, NODATA or NXDOMAIN).
    Local,
    /// FORMERR or BADVERS: the query could not be understood.
    Malformed,
    /// NOTIMP: an opcode other than QUERY.
    NotImplemented,
    /// SERVFAIL because no resolver may be used for this name (fail closed).
    FailClosed,
}

/// Which configured path a forwarded query takes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A split-DNS route for this domain.
    Split(String),
    /// The named exit node's resolver.
    Exit(String),
    /// The system resolvers.
    System,
}

/// A query to send upstream. The server picks a fresh random id per
/// exchange ([`Forward::upstream_query`]) so upstream replies cannot be
/// confused between clients, and maps the reply back with
/// [`Forward::relay`].
#[derive(Debug, Clone)]
pub struct Forward {
    /// Resolvers to try, in order. Never empty.
    pub to: Vec<SocketAddr>,
    /// The client's query id.
    pub query_id: u16,
    /// The client's question, as the client spelled it.
    pub question: Query,
    /// The path, for logs and metrics.
    pub via: Via,
    /// The largest UDP payload the client accepts.
    pub udp_limit: u16,
    request: Message,
    encoded: Vec<u8>,
}

/// A query as sent upstream: the client's query with a fresh id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamQuery {
    bytes: Vec<u8>,
    id: u16,
    question: Query,
}

impl ResolverConfig {
    /// Decides what to do with one packet received from a client. Never
    /// panics; the work is bounded by the packet size (hickory's decoder
    /// rejects compression pointers that do not point strictly backwards).
    pub fn decide(&self, query: &[u8]) -> Decision {
        let Some(header) = answer::read_header(query) else {
            return Decision::Drop;
        };
        if header.message_type == MessageType::Response {
            return Decision::Drop;
        }
        if header.op_code != OpCode::Query {
            return header_error(&header, ResponseCode::NotImp, AnswerKind::NotImplemented);
        }
        // Checked before a full parse: hickory reserves room for QDCOUNT
        // questions up front, so a 12-byte packet claiming 65535 would cost
        // megabytes.
        if header.counts.queries != 1 {
            return header_error(&header, ResponseCode::FormErr, AnswerKind::Malformed);
        }
        let Ok(request) = Message::from_vec(query) else {
            return header_error(&header, ResponseCode::FormErr, AnswerKind::Malformed);
        };
        if request.edns.as_ref().is_some_and(|edns| edns.version() > 0) {
            // RFC 6891 6.1.3: unknown EDNS version.
            let reply = answer::reply(&request, ResponseCode::BADVERS, false);
            return local(&request, &reply, AnswerKind::Malformed);
        }
        let Some(question) = request.queries.first() else {
            return header_error(&header, ResponseCode::FormErr, AnswerKind::Malformed);
        };
        let labels = lower_labels(question.name());
        match self.route(&labels) {
            Route::Local(zone, node) => self.answer_local(&request, question, zone, node),
            Route::Split { domain, resolvers } => forward(
                &request,
                question,
                resolvers.to_vec(),
                Via::Split(domain.join(".")),
            ),
            Route::Upstream => match &self.upstream {
                Upstream::Exit { addr, name } => {
                    forward(&request, question, vec![*addr], Via::Exit(name.clone()))
                }
                Upstream::System(resolvers) => {
                    forward(&request, question, resolvers.clone(), Via::System)
                }
                Upstream::None => fail_closed(&request),
            },
        }
    }

    fn answer_local(
        &self,
        request: &Message,
        question: &Query,
        zone: Zone,
        node: Node<'_>,
    ) -> Decision {
        let qtype = question.query_type();
        if question.query_class() != DNSClass::IN
            || matches!(qtype, RecordType::AXFR | RecordType::IXFR)
        {
            // Only class IN exists here, and zone transfers are not offered.
            let reply = answer::reply(request, ResponseCode::Refused, true);
            return local(request, &reply, AnswerKind::Local);
        }
        let owner = question.name().clone();
        let records = &self.dns.records;
        let (rcode, answers): (ResponseCode, Vec<Record>) = match node {
            Node::Names(indexes) => {
                let answers = indexes
                    .iter()
                    .filter_map(|&i| records.get(i))
                    .filter_map(|record| match (record.ip, qtype) {
                        (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => Some(RData::A(A(v4))),
                        (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => {
                            Some(RData::AAAA(AAAA(v6)))
                        }
                        _ => None,
                    })
                    .map(|data| Record::from_rdata(owner.clone(), MAGIC_TTL, data))
                    .collect();
                (ResponseCode::NoError, answers)
            }
            Node::Ptr(indexes) if matches!(qtype, RecordType::PTR | RecordType::ANY) => {
                let answers = indexes
                    .iter()
                    .filter_map(|&i| records.get(i))
                    .filter_map(|record| Name::from_ascii(format!("{}.", record.name)).ok())
                    .map(|target| {
                        Record::from_rdata(owner.clone(), MAGIC_TTL, RData::PTR(PTR(target)))
                    })
                    .collect();
                (ResponseCode::NoError, answers)
            }
            Node::Apex if matches!(qtype, RecordType::SOA | RecordType::ANY) => {
                let answers = self.soa(zone).map(|mut soa| {
                    soa.name = owner.clone();
                    soa
                });
                (ResponseCode::NoError, answers.into_iter().collect())
            }
            Node::Ptr(_) | Node::Apex | Node::Empty => (ResponseCode::NoError, Vec::new()),
            Node::Missing => (ResponseCode::NXDomain, Vec::new()),
        };
        let mut reply = answer::reply(request, rcode, true);
        if answers.is_empty() {
            // NODATA and NXDOMAIN carry the SOA so resolvers can cache the
            // negative answer for its minimum TTL (RFC 2308).
            reply.add_authorities(self.soa(zone));
        } else {
            reply.add_answers(answers);
        }
        local(request, &reply, AnswerKind::Local)
    }

    /// The SOA record of a zone, owned by its apex.
    fn soa(&self, zone: Zone) -> Option<Record> {
        let apex = match zone {
            Zone::Magic => self.apex.clone(),
            Zone::Reverse(second) => {
                Name::from_ascii(format!("{second}.100.in-addr.arpa.")).ok()?
            }
        };
        let soa = SOA::new(
            self.apex.clone(),
            self.hostmaster.clone(),
            1,
            3600,
            600,
            86_400,
            MAGIC_TTL,
        );
        Some(Record::from_rdata(apex, MAGIC_TTL, RData::SOA(soa)))
    }
}

impl Forward {
    /// The client's query with `id` in place of the client's id.
    pub fn upstream_query(&self, id: u16) -> UpstreamQuery {
        UpstreamQuery {
            bytes: with_id(&self.encoded, id),
            id,
            question: self.question.clone(),
        }
    }

    /// The response to send the client for an upstream reply to `sent`, or
    /// `None` when the reply does not answer `sent` (wrong id, not a
    /// response, different question): such replies are never relayed.
    pub fn relay(&self, sent: &UpstreamQuery, response: &[u8]) -> Option<Vec<u8>> {
        let message = sent.check(response)?;
        if message.queries.is_empty() {
            // An error reply that omitted the question: answer the client
            // with the same code and its own question.
            let reply = answer::reply(&self.request, message.response_code, false);
            return answer::encode(&reply);
        }
        Some(with_id(response, self.query_id))
    }

    /// SERVFAIL for the client, when no upstream answered in time.
    pub fn servfail(&self) -> Option<Vec<u8>> {
        answer::encode(&answer::reply(&self.request, ResponseCode::ServFail, false))
    }
}

impl UpstreamQuery {
    /// The bytes to send.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The id chosen for this exchange.
    pub fn id(&self) -> u16 {
        self.id
    }

    /// Whether `response` answers this query: a response with the same id
    /// and the same question (name compared case-insensitively, as some
    /// resolvers change case). An error reply without a question is also
    /// accepted, as RFC 1035 permits it.
    pub fn matches(&self, response: &[u8]) -> bool {
        self.check(response).is_some()
    }

    /// Whether `response` has the TC bit set (retry over TCP).
    pub fn is_truncated(response: &[u8]) -> bool {
        answer::read_header(response).is_some_and(|header| header.truncation)
    }

    fn check(&self, response: &[u8]) -> Option<Message> {
        let message = Message::from_vec(response).ok()?;
        if message.message_type != MessageType::Response
            || message.id != self.id
            || message.op_code != OpCode::Query
        {
            return None;
        }
        let same_question = match message.queries.as_slice() {
            [question] => {
                question.name() == self.question.name()
                    && question.query_type() == self.question.query_type()
                    && question.query_class() == self.question.query_class()
            }
            [] => !matches!(
                message.response_code,
                ResponseCode::NoError | ResponseCode::NXDomain
            ),
            _ => false,
        };
        same_question.then_some(message)
    }
}

fn forward(request: &Message, question: &Query, to: Vec<SocketAddr>, via: Via) -> Decision {
    if to.is_empty() {
        return fail_closed(request);
    }
    // Re-encoding drops trailing bytes and anything hickory did not parse,
    // so only what we understood leaves this node.
    let Some(encoded) = answer::encode(request) else {
        let reply = answer::reply(request, ResponseCode::FormErr, false);
        return local(request, &reply, AnswerKind::Malformed);
    };
    Decision::Forward(Box::new(Forward {
        to,
        query_id: request.id,
        question: question.clone(),
        via,
        udp_limit: answer::udp_limit(request),
        request: request.clone(),
        encoded,
    }))
}

fn fail_closed(request: &Message) -> Decision {
    let reply = answer::reply(request, ResponseCode::ServFail, false);
    local(request, &reply, AnswerKind::FailClosed)
}

fn local(request: &Message, reply: &Message, kind: AnswerKind) -> Decision {
    match answer::encode(reply) {
        Some(bytes) => Decision::Answer(Answer {
            bytes,
            udp_limit: answer::udp_limit(request),
            kind,
        }),
        None => match answer::encode(&answer::reply(request, ResponseCode::ServFail, false)) {
            Some(bytes) => Decision::Answer(Answer {
                bytes,
                udp_limit: answer::udp_limit(request),
                kind: AnswerKind::FailClosed,
            }),
            None => Decision::Drop,
        },
    }
}

fn header_error(
    header: &hickory_proto::op::Header,
    rcode: ResponseCode,
    kind: AnswerKind,
) -> Decision {
    match answer::header_reply(header, rcode) {
        Some(bytes) => Decision::Answer(Answer {
            bytes,
            udp_limit: answer::MIN_UDP_PAYLOAD,
            kind,
        }),
        None => Decision::Drop,
    }
}

/// `message` with its id replaced. The id is the first two octets of every
/// DNS message (RFC 1035 4.1.1); callers pass only messages hickory parsed.
fn with_id(message: &[u8], id: u16) -> Vec<u8> {
    let mut bytes = message.to_vec();
    if let Some(slot) = bytes.get_mut(..2) {
        slot.copy_from_slice(&id.to_be_bytes());
    }
    bytes
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
