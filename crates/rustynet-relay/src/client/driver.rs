//! The client thread: waits on the socket, the waker and the machine's next
//! deadline, and keeps one link up.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use rand_core::RngCore as _;

use super::link::{Ctx, Link, Progress};
use super::machine::{Action, Machine};
use super::{ClientConfig, ClientSink, ConnState, DownReason, Inner, Queues, lock};
use crate::error::RelayError;
use crate::frame::Frame;
use crate::tlsio;

/// The waker's token.
pub(super) const WAKE: mio::Token = mio::Token(0);
/// The socket's token.
const SOCKET: mio::Token = mio::Token(1);

pub(super) struct Driver {
    cfg: ClientConfig,
    ticket: Vec<u8>,
    tls: Arc<rustls::ClientConfig>,
    poll: mio::Poll,
    inner: Arc<Inner>,
    sink: Arc<dyn ClientSink>,
    machine: Machine,
    link: Option<Link>,
    next_addr: usize,
    chunk: Box<[u8]>,
    spare: Queues,
}

impl Driver {
    pub(super) fn new(
        cfg: ClientConfig,
        tls: Arc<rustls::ClientConfig>,
        poll: mio::Poll,
        inner: Arc<Inner>,
        sink: Arc<dyn ClientSink>,
    ) -> Result<Self, RelayError> {
        let machine = Machine::new(cfg.timeouts, Instant::now(), rand_core::OsRng.next_u64());
        Ok(Self {
            ticket: cfg.ticket.to_json().into_bytes(),
            cfg,
            tls,
            poll,
            inner,
            sink,
            machine,
            link: None,
            next_addr: 0,
            chunk: vec![0u8; tlsio::READ_CHUNK].into_boxed_slice(),
            spare: Queues::default(),
        })
    }

    pub(super) fn run(mut self) {
        let mut events = mio::Events::with_capacity(8);
        let mut again = false;
        loop {
            let now = Instant::now();
            let timeout = if again {
                std::time::Duration::ZERO
            } else {
                let mut deadline = self.machine.next_deadline();
                if let Some(hello) = lock(&self.inner.udp).next_hello(now) {
                    deadline = deadline.min(hello);
                }
                deadline.saturating_duration_since(now)
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout))
                && e.kind() != std::io::ErrorKind::Interrupted
            {
                tracing::warn!(error = %e, "relay client poll failed");
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
            if self.inner.stop.load(Ordering::Acquire) {
                break;
            }
            let now = Instant::now();
            self.take_ticket_update(now);
            again = self.pump(now);
            self.udp(now);
            while let Some(action) = self.machine.poll(now) {
                match action {
                    Action::Connect => self.connect(now),
                    Action::Ping(data) => {
                        if let Some(link) = &mut self.link {
                            link.send_frame(&Frame::Ping(data));
                            again = true;
                        }
                    }
                    Action::Dead => self.down(now, DownReason::Timeout),
                }
            }
        }
        if let Some(link) = self.link.take() {
            link.close();
        }
        self.inner.up.store(false, Ordering::Release);
    }

    fn pump(&mut self, now: Instant) -> bool {
        let Some(link) = &mut self.link else {
            return false;
        };
        let mut cx = Ctx {
            now,
            machine: &mut self.machine,
            sink: &*self.sink,
            inner: &self.inner,
            ticket: &self.ticket,
            login_key: &self.cfg.login_key,
            chunk: &mut self.chunk,
            spare: &mut self.spare,
        };
        match link.pump(&mut cx) {
            Ok((Progress::LoggedIn(observed), more)) => {
                self.machine.connected(now);
                self.inner.up.store(true, Ordering::Release);
                self.set_state(ConnState::Connected { observed });
                more
            }
            Ok((Progress::Idle, more)) => more,
            Err(reason) => {
                self.down(now, reason);
                false
            }
        }
    }

    /// UDP relay mode: a due hello out of the tunnel socket, lookups out
    /// over TLS.
    fn udp(&mut self, now: Instant) {
        let Some(to) = self.inner.udp_addr else {
            return;
        };
        let (hello, lookups) = {
            let mut udp = lock(&self.inner.udp);
            (udp.hello_due(now), std::mem::take(&mut udp.lookups))
        };
        if let Some(token) = hello {
            self.sink.send_udp(to, &crate::udp::hello(&token));
        }
        if let Some(link) = self.link.as_mut().filter(|l| l.is_up()) {
            for key in lookups {
                link.send_frame(&Frame::UdpLookup { key });
            }
        }
    }

    fn connect(&mut self, now: Instant) {
        let addr = self.cfg.addrs[self.next_addr % self.cfg.addrs.len()];
        self.next_addr = self.next_addr.wrapping_add(1);
        self.set_state(ConnState::Connecting);
        match Link::open(
            addr,
            &self.cfg.server_name,
            self.cfg.fwmark,
            &self.tls,
            self.poll.registry(),
            SOCKET,
        ) {
            Ok(link) => self.link = Some(link),
            Err(reason) => self.down(now, reason),
        }
    }

    fn down(&mut self, now: Instant, reason: DownReason) {
        self.link = None;
        self.inner.up.store(false, Ordering::Release);
        self.inner.rtt_us.store(0, Ordering::Relaxed);
        *lock(&self.inner.queues) = Queues::default();
        lock(&self.inner.udp).reset();
        let delay = self.machine.failed(now);
        tracing::info!(%reason, retry_in = ?delay, "relay connection down");
        self.set_state(ConnState::Down { reason });
    }

    fn take_ticket_update(&mut self, now: Instant) {
        let Some(ticket) = lock(&self.inner.new_ticket).take() else {
            return;
        };
        self.ticket = ticket.to_json().into_bytes();
        self.cfg.ticket = ticket;
        match &mut self.link {
            Some(link) if link.is_up() => link.send_frame(&Frame::TicketUpdate {
                ticket: bytes::Bytes::copy_from_slice(&self.ticket),
            }),
            // Mid-handshake: the attempt carries on with the old ticket,
            // the next login uses the new one.
            Some(_) => {}
            None => self.machine.retry_now(now),
        }
    }

    fn set_state(&self, state: ConnState) {
        *lock(&self.inner.state) = state.clone();
        self.sink.state(state);
    }
}
