//! Watches the host's addresses and links over netlink, so a node that
//! roams (new address, interface down or up) re-discovers and re-probes at
//! once instead of waiting for a path to fail. Changes on the tunnel
//! interface itself are ignored: the daemon makes those.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::device::Device;
use super::net::{Ready, wait};

const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_NEWADDR: u16 = 20;
const RTM_DELADDR: u16 = 21;
const RTMGRP_LINK: u32 = 0x1;
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;
/// `struct nlmsghdr`.
const NLMSG_HDRLEN: usize = 16;

fn open() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked and owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: sockaddr_nl is plain data; zeroed is a valid value.
    let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    addr.nl_groups = RTMGRP_LINK | RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR;
    // SAFETY: `addr` is a valid sockaddr_nl and the length matches it.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fd)
}

/// Whether one netlink datagram reports a change on an interface other than
/// `tun_index` (links: ifinfomsg.ifi_index; addresses: ifaddrmsg.ifa_index).
fn is_relevant(buf: &[u8], tun_index: u32) -> bool {
    let mut rest = buf;
    while rest.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        if len < NLMSG_HDRLEN || len > rest.len() {
            return false;
        }
        let body = &rest[NLMSG_HDRLEN..len];
        let index = match kind {
            // ifinfomsg: family u8, pad u8, type u16, index i32, ...
            RTM_NEWLINK | RTM_DELLINK if body.len() >= 8 => {
                Some(u32::from_ne_bytes([body[4], body[5], body[6], body[7]]))
            }
            // ifaddrmsg: family, prefixlen, flags, scope (u8 each), index u32
            RTM_NEWADDR | RTM_DELADDR if body.len() >= 8 => {
                Some(u32::from_ne_bytes([body[4], body[5], body[6], body[7]]))
            }
            _ => None,
        };
        if index.is_some_and(|i| i != tun_index) {
            return true;
        }
        // Messages are 4-byte aligned.
        let step = (len + 3) & !3;
        if step > rest.len() {
            break;
        }
        rest = &rest[step..];
    }
    false
}

fn if_index(name: &str) -> u32 {
    let Ok(c) = std::ffi::CString::new(name) else {
        return 0;
    };
    // SAFETY: `c` is a valid NUL-terminated string for the call.
    unsafe { libc::if_nametoindex(c.as_ptr()) }
}

/// Runs until stop: reports relevant changes to the device's paths.
pub(crate) fn run(dev: &Device) {
    let fd = match open() {
        Ok(fd) => fd,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch network changes; roaming is noticed only when paths fail");
            return;
        }
    };
    let tun_index = if_index(&dev.ifname);
    let mut buf = vec![0u8; 16 * 1024];
    while !dev.is_stopping() {
        match wait(fd.as_raw_fd(), libc::POLLIN, dev.waker.fd(), -1) {
            Ready::Wake | Ready::Broken => return,
            Ready::Timeout => continue,
            Ready::Io => {}
        }
        let mut changed = false;
        loop {
            // SAFETY: `buf` is valid for writes of its length.
            let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n <= 0 {
                // EAGAIN (drained) or ENOBUFS (we missed some): either way,
                // treat what we have; an overflow is a change too.
                if n < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOBUFS) {
                    changed = true;
                }
                break;
            }
            let n = usize::try_from(n).unwrap_or(0);
            changed |= is_relevant(&buf[..n], tun_index);
        }
        if changed {
            tracing::debug!("network changed: re-discovering paths");
            dev.paths.network_changed();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(kind: u16, index: u32) -> Vec<u8> {
        let mut m = Vec::new();
        m.extend_from_slice(&(24u32).to_ne_bytes());
        m.extend_from_slice(&kind.to_ne_bytes());
        m.extend_from_slice(&[0u8; 10]);
        m.extend_from_slice(&[2, 24, 0, 0]);
        m.extend_from_slice(&index.to_ne_bytes());
        m
    }

    #[test]
    fn only_other_interfaces_count() {
        assert!(is_relevant(&msg(RTM_NEWADDR, 3), 7));
        assert!(!is_relevant(&msg(RTM_NEWADDR, 7), 7));
        assert!(is_relevant(&msg(RTM_DELLINK, 2), 7));
        let mut two = msg(RTM_NEWADDR, 7);
        two.extend(msg(RTM_DELADDR, 4));
        assert!(is_relevant(&two, 7));
        assert!(!is_relevant(&msg(24 /* RTM_NEWROUTE */, 3), 7));
        assert!(!is_relevant(&[1, 2, 3], 7), "truncated input is ignored");
        let mut bad = msg(RTM_NEWADDR, 3);
        bad[0] = 200;
        assert!(!is_relevant(&bad, 7), "a length past the buffer is ignored");
    }
}
