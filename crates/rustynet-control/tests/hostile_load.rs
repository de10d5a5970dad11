//! The control plane under hostile load, over real TLS 1.3 on loopback:
//! floods from one source must not keep real nodes from enrolling and
//! streaming, nor make the server write to disk.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::IpAddr;
use std::time::{Duration, Instant};

use common::{Harness, POLICY_ALL, db_fingerprint, flood_bad_enrollments, next_map};

const FLOODER: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_enrollments_write_nothing_durable_and_are_rate_limited() {
    let h = Harness::start(Duration::from_secs(600)).await;
    h.set_policy(POLICY_ALL);
    // Let the server settle (its first reload, the policy) before measuring.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = db_fingerprint(&h);
    let statuses = flood_bad_enrollments(&h, FLOODER, 4, 100).await;
    assert_eq!(db_fingerprint(&h), before, "a bad enrollment wrote to disk");
    let refused = statuses.iter().filter(|s| **s == 401).count();
    let limited = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!(refused + limited, 400, "{statuses:?}");
    // The burst (64) plus what refilled during the flood got an answer on
    // the key; the rest was cut off before its body was read.
    assert!(
        (64..200).contains(&refused),
        "{refused} reached the key check"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_bad_enrollments_does_not_delay_a_good_node() {
    let h = Harness::start(Duration::from_secs(600)).await;
    h.set_policy(POLICY_ALL);
    let key = h.preauth("alice", true, None);
    let flood = flood_bad_enrollments(&h, FLOODER, 8, 250);
    let good = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = Instant::now();
        let node = h.enroll(&key, "good", 1).await;
        let mut hw = 0;
        let mut stream = node.stream(&h).await;
        next_map(&mut stream, &node, &mut hw).await;
        started.elapsed()
    };
    let (statuses, took) = tokio::join!(flood, good);
    assert!(statuses.iter().filter(|s| **s == 429).count() > 1000);
    assert!(
        took < Duration::from_secs(2),
        "the good node took {took:?} to enroll and get its first map"
    );
}
