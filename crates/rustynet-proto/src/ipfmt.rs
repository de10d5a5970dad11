//! Serializes prefix lists exactly as `ipnet` does (`"100.64.0.1/32"`), but
//! writes IPv4 digits directly. A server's map lists every client that may
//! reach it, so building the maps of a large network formats hundreds of
//! thousands of prefixes, and going through `fmt` for each was a visible
//! share of that work.

use ipnet::{IpNet, Ipv4Net};
use serde::{Serialize, Serializer};

/// `serialize_with` for `Vec<IpNet>` fields.
pub(crate) fn serialize_nets<S: Serializer>(nets: &[IpNet], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(nets.iter().map(Net))
}

struct Net<'a>(&'a IpNet);

impl Serialize for Net<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            IpNet::V4(net) if s.is_human_readable() => {
                let mut buf = [0u8; 18];
                let len = write_v4(&mut buf, net);
                match std::str::from_utf8(&buf[..len]) {
                    Ok(text) => s.serialize_str(text),
                    Err(_) => self.0.serialize(s),
                }
            }
            other => other.serialize(s),
        }
    }
}

/// Writes `a.b.c.d/len` (at most 18 bytes) and returns its length.
fn write_v4(buf: &mut [u8; 18], net: &Ipv4Net) -> usize {
    let mut at = 0;
    for (i, octet) in net.addr().octets().into_iter().enumerate() {
        if i > 0 {
            buf[at] = b'.';
            at += 1;
        }
        at += write_u8(&mut buf[at..], octet);
    }
    buf[at] = b'/';
    at + 1 + write_u8(&mut buf[at + 1..], net.prefix_len())
}

fn write_u8(buf: &mut [u8], n: u8) -> usize {
    if n >= 100 {
        buf[..3].copy_from_slice(&[b'0' + n / 100, b'0' + n / 10 % 10, b'0' + n % 10]);
        3
    } else if n >= 10 {
        buf[..2].copy_from_slice(&[b'0' + n / 10, b'0' + n % 10]);
        2
    } else {
        buf[0] = b'0' + n;
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize)]
    struct Fast(#[serde(serialize_with = "serialize_nets")] Vec<IpNet>);

    #[test]
    fn output_is_what_ipnet_writes() {
        let mut nets: Vec<IpNet> = [
            "0.0.0.0/0",
            "255.255.255.255/32",
            "100.64.0.1/32",
            "10.0.0.0/8",
            "192.168.77.0/24",
            "1.20.100.9/9",
            "fd00::/64",
            "::/0",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
        for n in 0..=255u8 {
            let len = n % 33;
            nets.push(IpNet::V4(
                Ipv4Net::new([n, 255 - n, n / 3, n % 10].into(), len).unwrap(),
            ));
        }
        assert_eq!(
            serde_json::to_string(&Fast(nets.clone())).unwrap(),
            serde_json::to_string(&nets).unwrap()
        );
    }
}
