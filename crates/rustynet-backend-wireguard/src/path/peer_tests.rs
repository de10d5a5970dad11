//! Unit tests of the path machine on a fake clock.

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([198, 51, 100, i], 41641))
}

/// A peer machine and a fake clock.
struct H {
    p: PathPeer,
    now: Instant,
}

impl H {
    fn new(relay: bool, candidates: &[SocketAddr]) -> Self {
        let now = Instant::now();
        let local: Arc<[SocketAddr]> = Arc::from(vec![SocketAddr::from(([203, 0, 113, 1], 5))]);
        let p = PathPeer::new(now, Timing::default(), [7; 32], candidates, local, relay);
        Self { p, now }
    }

    /// Moves the clock, running every deadline on the way.
    fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        while let Some(t) = self.p.poll_timeout() {
            if t > end {
                break;
            }
            self.now = self.now.max(t);
            self.p.handle_timeout(self.now);
        }
        self.now = end;
        self.p.handle_timeout(end);
    }

    /// Marks the peer active (data sent now).
    fn send_data(&mut self) {
        self.p.note_tx(self.now, self.now);
    }

    fn drain(&mut self) -> Vec<Transmit> {
        std::iter::from_fn(|| self.p.poll_transmit()).collect()
    }

    fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.p.poll_event()).collect()
    }

    /// Answers every ping in `out` sent to `to` (after `rtt`).
    fn answer(&mut self, out: &[Transmit], to: SocketAddr, rtt: Duration) -> usize {
        let mut n = 0;
        for t in out {
            if let (Via::Direct(a), Message::Ping { txid }) = (t.via, &t.msg)
                && a == to
            {
                let at = self.now + rtt;
                let msg = Message::Pong {
                    txid: *txid,
                    observed: None,
                };
                self.p.handle_probe(at, Via::Direct(to), msg);
                n += 1;
            }
        }
        n
    }

    /// Drives the peer to a trusted direct `to` while active.
    fn make_direct(&mut self, to: SocketAddr) {
        self.send_data();
        for _ in 0..2 {
            let out = self.drain();
            assert!(self.answer(&out, to, ms(1)) > 0, "a ping to {to}: {out:?}");
            self.advance(ms(25));
        }
        assert_eq!(self.p.route(), Route::Direct(to));
    }
}

fn pings_to(out: &[Transmit], to: SocketAddr) -> usize {
    out.iter()
        .filter(|t| t.via == Via::Direct(to) && matches!(t.msg, Message::Ping { .. }))
        .count()
}

fn has_call_me(out: &[Transmit]) -> bool {
    out.iter()
        .any(|t| t.via == Via::Relay && matches!(t.msg, Message::CallMeMaybe { .. }))
}

#[test]
fn the_initial_route_is_the_relay_else_the_netmap_endpoint_else_none() {
    assert_eq!(H::new(true, &[addr(1)]).p.route(), Route::Relay);
    assert_eq!(H::new(false, &[addr(1)]).p.route(), Route::Direct(addr(1)));
    assert_eq!(H::new(false, &[]).p.route(), Route::None);
    let mut idle = H::new(true, &[addr(1)]);
    assert!(idle.drain().is_empty(), "an idle peer punches nothing");
}

#[test]
fn becoming_active_without_a_path_pings_every_candidate_and_calls_the_peer() {
    let mut h = H::new(true, &[addr(1), addr(2)]);
    h.send_data();
    let out = h.drain();
    assert_eq!(pings_to(&out, addr(1)), 1);
    assert_eq!(pings_to(&out, addr(2)), 1);
    assert!(has_call_me(&out));
    assert_eq!(
        h.p.route(),
        Route::Relay,
        "data goes through the relay at once"
    );
}

#[test]
fn one_pong_sends_a_confirming_ping_and_the_second_promotes() {
    let mut h = H::new(true, &[addr(1)]);
    h.send_data();
    let out = h.drain();
    h.answer(&out, addr(1), ms(10));
    assert_eq!(h.p.route(), Route::Relay, "one pong is not enough");
    h.advance(ms(30));
    let out = h.drain();
    assert_eq!(
        pings_to(&out, addr(1)),
        1,
        "confirmation sent at once: {out:?}"
    );
    h.answer(&out, addr(1), ms(10));
    assert_eq!(h.p.route(), Route::Direct(addr(1)));
    let ev = h.events();
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::Route {
            route: Route::Direct(_),
            kind: PathKind::Direct,
            reason: Reason::Pong,
            ..
        }
    )));
    assert_eq!(h.p.stats().switches[Reason::Pong.index()], 1);
}

#[test]
fn pongs_that_answer_nothing_or_come_from_elsewhere_change_nothing() {
    let mut h = H::new(true, &[addr(1)]);
    h.send_data();
    let out = h.drain();
    let Some(txid) = out.iter().find_map(|t| match t.msg {
        Message::Ping { txid } => Some(txid),
        _ => None,
    }) else {
        panic!("a ping");
    };
    for _ in 0..3 {
        // Wrong txid, right address.
        h.p.handle_probe(
            h.now,
            Via::Direct(addr(1)),
            Message::Pong {
                txid: [0; 12],
                observed: None,
            },
        );
        // Right txid, other address / through the relay.
        h.p.handle_probe(
            h.now,
            Via::Direct(addr(9)),
            Message::Pong {
                txid,
                observed: None,
            },
        );
        h.p.handle_probe(
            h.now,
            Via::Relay,
            Message::Pong {
                txid,
                observed: None,
            },
        );
    }
    assert_eq!(h.p.stats().pongs_unmatched, 9);
    assert_eq!(h.p.stats().pongs_received, 0);
    assert_eq!(h.p.route(), Route::Relay);
    // The genuine pong still counts: the impostors did not consume the ping.
    h.p.handle_probe(
        h.now,
        Via::Direct(addr(1)),
        Message::Pong {
            txid,
            observed: None,
        },
    );
    assert_eq!(h.p.stats().pongs_received, 1);
}

#[test]
fn pings_are_answered_on_their_path_and_pinged_back_but_never_trusted() {
    let mut h = H::new(true, &[]);
    h.send_data();
    h.drain();
    for i in 0..10u8 {
        h.p.handle_probe(h.now, Via::Direct(addr(5)), Message::Ping { txid: [i; 12] });
        let out = h.drain();
        assert!(out.contains(&Transmit {
            via: Via::Direct(addr(5)),
            msg: Message::Pong {
                txid: [i; 12],
                observed: Some(addr(5))
            },
        }));
        if i == 0 {
            assert_eq!(pings_to(&out, addr(5)), 1, "ping back to open our NAT");
        }
        h.advance(ms(100));
    }
    h.p.handle_probe(h.now, Via::Relay, Message::Ping { txid: [99; 12] });
    let out = h.drain();
    assert!(out.contains(&Transmit {
        via: Via::Relay,
        msg: Message::Pong {
            txid: [99; 12],
            observed: None
        },
    }));
    assert_eq!(h.p.route(), Route::Relay, "incoming pings prove nothing");
}

#[test]
fn a_silent_direct_path_goes_to_both_after_the_trust_window_then_to_the_relay() {
    let mut h = H::new(true, &[addr(1)]);
    h.make_direct(addr(1));
    let last_pong = h.now - ms(25);
    h.events();
    // Heartbeats continue every 250 ms but nothing answers.
    let mut sent = 0;
    let mut t = Duration::ZERO;
    while h.p.route() == Route::Direct(addr(1)) {
        h.send_data();
        h.advance(ms(10));
        t += ms(10);
        sent += pings_to(&h.drain(), addr(1));
        assert!(t < ms(2000), "never left direct");
    }
    let gap = h.now - last_pong;
    assert!(
        gap >= ms(1000) && gap <= ms(1010),
        "left direct after {gap:?}"
    );
    assert!((3..=5).contains(&sent), "{sent} heartbeats");
    assert_eq!(h.p.route(), Route::Both(addr(1)));
    assert_eq!(h.p.status(h.now).kind, PathKind::Relay);
    let before = h.now;
    while h.p.route() != Route::Relay {
        h.send_data();
        h.advance(ms(10));
    }
    let hold = h.now - before;
    assert!(hold >= ms(3000) && hold <= ms(3010), "{hold:?}");
    let reasons: Vec<Reason> = h
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Route { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(reasons, vec![Reason::TrustExpired, Reason::DirectLost]);
    assert_eq!(h.p.stats().switches[Reason::TrustExpired.index()], 1);
    assert_eq!(
        h.p.stats().switches[Reason::DirectLost.index()],
        0,
        "still relay"
    );
}

#[test]
fn tunnel_packets_from_the_address_do_not_keep_it_trusted() {
    let mut h = H::new(true, &[addr(1)]);
    h.make_direct(addr(1));
    for _ in 0..150 {
        h.send_data();
        h.p.note_rx(h.now, Some(addr(1)));
        h.advance(ms(10));
        h.drain();
    }
    assert_eq!(
        h.p.route(),
        Route::Both(addr(1)),
        "one-way traffic is no proof"
    );
}

#[test]
fn a_healed_path_is_reprobed_fast_and_promoted_after_two_pongs() {
    let mut h = H::new(true, &[addr(1), addr(2)]);
    h.make_direct(addr(1));
    for _ in 0..600 {
        h.send_data();
        h.advance(ms(10));
        h.drain();
    }
    assert_eq!(h.p.route(), Route::Relay);
    // Over one second the last trusted address gets 4 pings, others fewer.
    let mut to1 = 0;
    let mut to2 = 0;
    for _ in 0..100 {
        h.send_data();
        h.advance(ms(10));
        let out = h.drain();
        to1 += pings_to(&out, addr(1));
        to2 += pings_to(&out, addr(2));
    }
    assert_eq!(to1, 4);
    assert!(to2 <= 1, "{to2}");
    // Heal: answer from now on.
    let healed = h.now;
    while h.p.route() != Route::Direct(addr(1)) {
        h.send_data();
        let out = h.drain();
        h.answer(&out, addr(1), ms(20));
        h.advance(ms(5));
        assert!(h.now - healed < ms(1000));
    }
    assert!(h.now - healed <= ms(300), "{:?}", h.now - healed);
}

#[test]
fn a_network_change_mirrors_at_once_repings_everything_and_calls_the_peer() {
    let mut h = H::new(true, &[addr(1), addr(2)]);
    h.make_direct(addr(1));
    h.drain();
    h.p.network_changed(h.now);
    assert_eq!(h.p.route(), Route::Both(addr(1)));
    let out = h.drain();
    assert_eq!(pings_to(&out, addr(1)) + pings_to(&out, addr(2)), 2);
    assert!(has_call_me(&out));
    // Without a relay the old address is still the best guess.
    h.p.set_relay(h.now, false);
    assert_eq!(h.p.route(), Route::Direct(addr(1)));
}

#[test]
fn losing_the_relay_falls_back_to_the_best_guess_or_nothing() {
    let mut h = H::new(true, &[]);
    assert_eq!(h.p.route(), Route::Relay);
    h.p.set_relay(h.now, false);
    assert_eq!(h.p.route(), Route::None, "fail closed: nowhere to send");
    h.p.set_relay(h.now, true);
    h.p.note_rx(h.now, Some(addr(3)));
    assert_eq!(h.p.route(), Route::Relay);
    h.p.set_relay(h.now, false);
    assert_eq!(h.p.route(), Route::Direct(addr(3)));
    let reasons: Vec<Reason> = h
        .events()
        .into_iter()
        .filter_map(|e| match e {
            Event::Route { reason, .. } => Some(reason),
            _ => None,
        })
        .collect();
    assert_eq!(
        reasons,
        vec![Reason::RelayDown, Reason::RelayUp, Reason::RelayDown]
    );
}

#[test]
fn without_a_relay_the_latest_authenticated_source_wins_like_wireguard_roaming() {
    let mut h = H::new(false, &[addr(1)]);
    assert_eq!(h.p.route(), Route::Direct(addr(1)));
    h.p.note_rx(h.now, Some(addr(2)));
    assert_eq!(h.p.route(), Route::Direct(addr(2)));
    h.advance(ms(5));
    h.p.note_rx(h.now, Some(addr(3)));
    assert_eq!(h.p.route(), Route::Direct(addr(3)));
    assert_eq!(h.p.status(h.now).kind, PathKind::Direct);
}

#[test]
fn idle_peers_keep_the_mapping_alive_rarely_and_reconfirm_on_activity_without_a_switch() {
    let mut h = H::new(true, &[addr(1)]);
    h.make_direct(addr(1));
    // Heartbeats until the activity window closes.
    let start = h.now;
    while h.now - start < Duration::from_secs(11) {
        h.advance(ms(100));
        let out = h.drain();
        h.answer(&out, addr(1), ms(5));
    }
    // Idle for a minute, answering keepalives.
    let mut keepalives = 0;
    let start = h.now;
    while h.now - start < Duration::from_secs(60) {
        h.advance(ms(100));
        let out = h.drain();
        keepalives += h.answer(&out, addr(1), ms(5));
    }
    assert!(
        (2..=4).contains(&keepalives),
        "{keepalives} keepalives in 60 s"
    );
    assert_eq!(h.p.route(), Route::Direct(addr(1)));
    h.events();
    // Activity with a last pong seconds old: mirror, ping, then direct.
    h.send_data();
    assert_eq!(h.p.route(), Route::Both(addr(1)));
    let out = h.drain();
    assert_eq!(pings_to(&out, addr(1)), 1);
    h.answer(&out, addr(1), ms(5));
    assert_eq!(h.p.route(), Route::Direct(addr(1)));
    let switches: u64 = h.p.stats().switches.iter().sum();
    assert_eq!(switches, 1, "only the first promotion changed the kind");
}

#[test]
fn a_clearly_faster_address_takes_over_after_two_pongs() {
    let mut h = H::new(true, &[addr(1), addr(2)]);
    h.send_data();
    for _ in 0..2 {
        let out = h.drain();
        h.answer(&out, addr(1), ms(40));
        h.advance(ms(25));
    }
    assert_eq!(h.p.route(), Route::Direct(addr(1)));
    // Other addresses are retried on the upgrade schedule (30 s).
    let mut switched = false;
    for _ in 0..800 {
        h.send_data();
        let out = h.drain();
        h.answer(&out, addr(1), ms(40));
        h.answer(&out, addr(2), ms(2));
        h.advance(ms(50));
        if h.p.route() == Route::Direct(addr(2)) {
            switched = true;
            break;
        }
    }
    assert!(switched, "{:?}", h.p);
    assert_eq!(h.p.status(h.now).last_reason, Some(Reason::BetterPath));
}

#[test]
fn a_peer_that_roamed_is_followed_before_the_old_address_loses_trust() {
    let mut h = H::new(true, &[addr(1)]);
    h.make_direct(addr(1));
    let last_pong = h.now;
    // The peer's NAT rebinds: it now pings us from addr(2); addr(1) is dead.
    h.p.handle_probe(h.now, Via::Direct(addr(2)), Message::Ping { txid: [1; 12] });
    let mut moved_at = None;
    for _ in 0..100 {
        h.send_data();
        let out = h.drain();
        h.answer(&out, addr(2), ms(10));
        h.advance(ms(10));
        if h.p.route() == Route::Direct(addr(2)) {
            moved_at = Some(h.now);
            break;
        }
    }
    let Some(at) = moved_at else {
        panic!("never moved: {:?}", h.p);
    };
    assert!(
        at - last_pong < ms(1000),
        "moved after {:?}",
        at - last_pong
    );
    assert_eq!(h.p.status(h.now).kind, PathKind::Direct);
}

#[test]
fn call_me_maybe_makes_even_an_idle_peer_ping_every_listed_address() {
    let mut h = H::new(true, &[]);
    let listed = vec![addr(1), addr(2), "0.0.0.0:1".parse().expect("addr")];
    h.p.handle_probe(
        h.now,
        Via::Relay,
        Message::CallMeMaybe { candidates: listed },
    );
    let out = h.drain();
    assert_eq!(pings_to(&out, addr(1)), 1);
    assert_eq!(pings_to(&out, addr(2)), 1);
    assert_eq!(h.p.stats().candidates_refused, 1);
    h.answer(&out, addr(1), ms(3));
    h.advance(ms(25));
    let out = h.drain();
    h.answer(&out, addr(1), ms(3));
    assert_eq!(
        h.p.route(),
        Route::Direct(addr(1)),
        "punched without sending data"
    );
}

#[test]
fn the_schedule_never_spins_and_queues_stay_bounded() {
    let mut h = H::new(true, &[addr(1), addr(2), addr(3)]);
    let mut calls = 0;
    h.send_data();
    let end = h.now + Duration::from_secs(600);
    while let Some(t) = h.p.poll_timeout() {
        assert!(t >= h.now, "deadline in the past");
        if t > end {
            break;
        }
        h.now = t;
        h.p.note_tx(h.now, h.now);
        h.p.handle_timeout(h.now);
        calls += 1;
        assert!(calls < 5_000, "spinning at {:?}", h.p);
    }
    // Never drained: the queue stops growing at its cap.
    let sent = h.p.stats().pings_sent + h.p.stats().call_me_sent;
    let queued = h.drain().len();
    assert!(sent > 200, "{sent} probes in 10 minutes, {calls} calls");
    assert!(queued <= MAX_TRANSMITS, "{queued}");
    assert!(h.p.stats().transmit_drops > 0);
}

#[test]
fn netmap_changes_add_candidates_and_drop_unused_ones() {
    let mut h = H::new(false, &[addr(1)]);
    h.send_data();
    h.drain();
    h.p.set_candidates(h.now, &[addr(2)]);
    assert_eq!(
        pings_to(&h.drain(), addr(2)),
        1,
        "a new address of an active peer"
    );
    assert_eq!(
        h.p.route(),
        Route::Direct(addr(2)),
        "the netmap endpoint moved"
    );
    let ev = h.events();
    assert!(ev.iter().any(|e| matches!(
        e,
        Event::Route {
            reason: Reason::CandidatesChanged,
            ..
        }
    )));
}

#[test]
fn local_candidates_reach_an_active_peer_in_the_next_call_me_maybe() {
    let mut h = H::new(true, &[addr(1)]);
    h.send_data();
    h.drain();
    let new: Arc<[SocketAddr]> = Arc::from(vec![addr(50), addr(51)]);
    h.p.set_local_candidates(h.now, Arc::clone(&new));
    h.advance(ms(300));
    let out = h.drain();
    let sent = out.iter().find_map(|t| match &t.msg {
        Message::CallMeMaybe { candidates } => Some(candidates.clone()),
        _ => None,
    });
    assert_eq!(sent.as_deref(), Some(&new[..]));
}

#[test]
fn ping_all_measures_every_path_including_the_relay() {
    let mut h = H::new(true, &[addr(1), addr(2)]);
    let ids = h.p.ping_all(h.now);
    let out = h.drain();
    assert_eq!(ids.len(), 3);
    assert_eq!(pings_to(&out, addr(1)) + pings_to(&out, addr(2)), 2);
    let Some(txid) = out.iter().find_map(|t| match (t.via, &t.msg) {
        (Via::Relay, Message::Ping { txid }) => Some(*txid),
        _ => None,
    }) else {
        panic!("a relay ping: {out:?}");
    };
    assert!(ids.contains(&txid));
    let pong = Message::Pong {
        txid,
        observed: None,
    };
    h.p.handle_probe(h.now + ms(30), Via::Relay, pong);
    let ev = Event::Pong {
        via: Via::Relay,
        rtt: ms(30),
        txid,
    };
    assert!(h.events().contains(&ev));
    assert_eq!(h.p.status(h.now).relay_rtt, Some(ms(30)));
    assert_eq!(
        h.p.route(),
        Route::Relay,
        "a relay pong proves nothing direct"
    );
}

#[test]
fn ping_route_follows_each_leg_of_the_current_route() {
    let mut h = H::new(true, &[addr(1)]);
    assert_eq!(h.p.ping_route(h.now).len(), 1, "relay only");
    let relay_only = h.drain();
    assert!(relay_only.iter().all(|t| t.via == Via::Relay));
    h.make_direct(addr(1));
    h.drain();
    let ids = h.p.ping_route(h.now);
    let out = h.drain();
    assert_eq!((ids.len(), pings_to(&out, addr(1)), out.len()), (1, 1, 1));
    h.p.network_changed(h.now);
    h.drain();
    assert_eq!(h.p.route(), Route::Both(addr(1)));
    assert_eq!(h.p.ping_route(h.now + ms(30)).len(), 2, "both legs");
    let mut none = H::new(false, &[]);
    assert!(none.p.ping_route(none.now).is_empty());
    assert!(none.drain().is_empty());
}

#[test]
fn status_words_match_the_interface() {
    let kinds: Vec<&str> = [PathKind::Direct, PathKind::Relay, PathKind::None]
        .iter()
        .map(|k| k.as_str())
        .collect();
    assert_eq!(kinds, ["direct", "relay", "none"]);
    for (i, r) in Reason::ALL.iter().enumerate() {
        assert_eq!(r.index(), i);
        assert!(!r.as_str().is_empty());
    }
}

impl H {
    /// Stops answering until trust expires (the peer stays active).
    fn lose_trust(&mut self) {
        while matches!(self.p.route(), Route::Direct(_)) {
            self.send_data();
            self.advance(ms(10));
            self.drain();
        }
    }

    /// Answers every ping to `to` until the route is direct again; returns
    /// how many pongs that took.
    fn pongs_to_recover(&mut self, to: SocketAddr) -> usize {
        let mut pongs = 0;
        while self.p.route() != Route::Direct(to) {
            self.send_data();
            let out = self.drain();
            pongs += self.answer(&out, to, ms(5));
            self.advance(ms(10));
            assert!(pongs < 100, "never recovered");
        }
        pongs
    }
}

#[test]
fn repeated_failures_demand_longer_streaks_and_the_penalty_decays_on_a_sound_path() {
    let mut h = H::new(true, &[addr(1)]);
    h.make_direct(addr(1));
    let mut needed = Vec::new();
    for _ in 0..4 {
        h.lose_trust();
        needed.push(h.pongs_to_recover(addr(1)));
    }
    assert_eq!(needed, vec![2, 8, 32, 32]);
    // Two minutes on a sound direct path take the penalty down two levels.
    let start = h.now;
    while h.now - start < Duration::from_secs(121) {
        h.send_data();
        let out = h.drain();
        h.answer(&out, addr(1), ms(5));
        h.advance(ms(50));
    }
    h.lose_trust();
    assert_eq!(h.pongs_to_recover(addr(1)), 8, "penalty 3 - 2 + 1 = 2");
}

#[test]
fn a_network_change_is_not_held_against_the_path() {
    let mut h = H::new(true, &[addr(1)]);
    h.make_direct(addr(1));
    for _ in 0..3 {
        h.p.network_changed(h.now);
        assert_eq!(h.pongs_to_recover(addr(1)), 2);
    }
}

#[test]
fn an_idle_trust_expiry_costs_no_penalty() {
    let mut h = H::new(true, &[addr(1)]);
    h.make_direct(addr(1));
    h.lose_trust();
    assert_eq!(h.pongs_to_recover(addr(1)), 2, "first failure");
    // Go idle (answering until the activity window closes), then let the
    // keepalives go unanswered until trust lapses.
    let start = h.now;
    while h.now - start < Duration::from_secs(11) {
        h.advance(ms(100));
        let out = h.drain();
        h.answer(&out, addr(1), ms(5));
    }
    assert!(!h.p.status(h.now).active);
    h.advance(Duration::from_secs(70));
    h.drain();
    assert_ne!(h.p.route(), Route::Direct(addr(1)));
    assert_eq!(
        h.pongs_to_recover(addr(1)),
        2,
        "still penalty 1: idleness is no failure"
    );
}

#[test]
fn a_peer_idle_for_long_goes_cold_and_stops_probing() {
    let mut h = H::new(true, &[addr(1)]);
    h.make_direct(addr(1));
    let mut late = 0;
    let start = h.now;
    while h.now - start < Duration::from_secs(1200) {
        h.advance(Duration::from_secs(1));
        let out = h.drain();
        let n = h.answer(&out, addr(1), ms(5));
        if h.now - start > Duration::from_secs(700) {
            late += n;
        }
    }
    assert_eq!(late, 0, "cold peers send nothing");
    assert_eq!(h.p.poll_timeout(), None, "and need no timer");
}

#[test]
fn call_me_maybe_floods_are_ignored() {
    let mut h = H::new(true, &[]);
    for i in 0..10u8 {
        let candidates = vec![addr(i)];
        h.p.handle_probe(h.now, Via::Relay, Message::CallMeMaybe { candidates });
        h.advance(ms(10));
    }
    assert_eq!(h.p.stats().call_me_received, 1);
    assert_eq!(h.p.stats().call_me_ignored, 9);
    assert_eq!(pings_to(&h.drain(), addr(0)), 1);
}

#[test]
fn an_unconfirmed_guess_is_tried_but_not_reported_as_a_path() {
    let mut h = H::new(false, &[addr(1)]);
    assert_eq!(
        h.p.route(),
        Route::Direct(addr(1)),
        "the netmap address is tried"
    );
    assert_eq!(
        h.p.status(h.now).kind,
        PathKind::None,
        "but it is no path yet"
    );
    h.p.note_rx(h.now, Some(addr(1)));
    assert_eq!(
        h.p.status(h.now).kind,
        PathKind::Direct,
        "evidence makes it one"
    );
    let trust = Timing::default().trust;
    h.advance(trust + ms(1));
    assert_eq!(h.p.route(), Route::Direct(addr(1)), "still tried");
    assert_eq!(
        h.p.status(h.now).kind,
        PathKind::None,
        "stale evidence is reported at its deadline, with no other input"
    );
}

#[test]
fn ping_all_asks_an_idle_peer_to_call_back() {
    let mut h = H::new(true, &[addr(1), addr(2)]);
    assert!(h.drain().is_empty(), "idle: nothing sent");
    h.p.ping_all(h.now);
    let out = h.drain();
    assert_eq!(pings_to(&out, addr(1)), 1);
    assert_eq!(pings_to(&out, addr(2)), 1);
    assert!(
        has_call_me(&out),
        "the peer behind NAT must ping back: {out:?}"
    );
}
