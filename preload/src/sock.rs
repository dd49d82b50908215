//! Reading socket addresses handed to us by C, and the socket's protocol.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libc::{c_int, sockaddr, socklen_t};

/// What a socket address means for the guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    /// An IPv4 or IPv6 destination (IPv4-mapped kept as given; the matcher canonicalises).
    Inet { ip: IpAddr, port: u16 },
    /// Not network egress, or malformed: the kernel decides (Unix, netlink, `AF_UNSPEC`,
    /// too short for its family).
    Other,
}

/// Reads the destination from `addr`/`len` without reading past `len`.
///
/// # Safety
/// `addr` must be null or point to at least `len` readable bytes.
pub unsafe fn read(addr: *const sockaddr, len: socklen_t) -> Dest {
    let len = len as usize;
    if addr.is_null() || len < std::mem::size_of::<libc::sa_family_t>() {
        return Dest::Other;
    }
    // SAFETY: non-null and at least two bytes long, as checked; read_unaligned because C
    // callers may hand us any alignment.
    let family = unsafe { std::ptr::read_unaligned(addr.cast::<libc::sa_family_t>()) };
    match c_int::from(family) {
        libc::AF_INET if len >= std::mem::size_of::<libc::sockaddr_in>() => {
            // SAFETY: at least sizeof(sockaddr_in) readable bytes, as checked.
            let sin = unsafe { std::ptr::read_unaligned(addr.cast::<libc::sockaddr_in>()) };
            Dest::Inet {
                ip: IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))),
                port: u16::from_be(sin.sin_port),
            }
        }
        // The kernel accepts the RFC 2133 size (without sin6_scope_id), 24 bytes.
        libc::AF_INET6 if len >= 24 => {
            let mut sin6: libc::sockaddr_in6 = {
                // SAFETY: sockaddr_in6 is plain old data; all-zero is a valid value.
                unsafe { std::mem::zeroed() }
            };
            let n = len.min(std::mem::size_of::<libc::sockaddr_in6>());
            // SAFETY: we copy n <= len readable bytes into a local of at least n bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    addr.cast::<u8>(),
                    (&mut sin6 as *mut libc::sockaddr_in6).cast::<u8>(),
                    n,
                )
            };
            Dest::Inet {
                ip: IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)),
                port: u16::from_be(sin6.sin6_port),
            }
        }
        _ => Dest::Other,
    }
}

/// An address of family `family` stored as `len` raw bytes at `p` (a hostent entry, a
/// gethostbyaddr argument).
///
/// # Safety
/// `p` must be null or point to `len` readable bytes.
pub unsafe fn ip_from_raw(family: c_int, len: usize, p: *const u8) -> Option<IpAddr> {
    if p.is_null() {
        return None;
    }
    match (family, len) {
        (libc::AF_INET, 4) => {
            let mut b = [0u8; 4];
            // SAFETY: 4 readable bytes, per the caller.
            unsafe { std::ptr::copy_nonoverlapping(p, b.as_mut_ptr(), 4) };
            Some(IpAddr::V4(Ipv4Addr::from(b)))
        }
        (libc::AF_INET6, 16) => {
            let mut b = [0u8; 16];
            // SAFETY: 16 readable bytes, per the caller.
            unsafe { std::ptr::copy_nonoverlapping(p, b.as_mut_ptr(), 16) };
            Some(IpAddr::V6(Ipv6Addr::from(b)))
        }
        _ => None,
    }
}

/// The transport of a socket, as reports name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
    Raw,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
            Proto::Icmp => "icmp",
            Proto::Raw => "raw",
        }
    }
}

fn sockopt(fd: c_int, opt: c_int) -> Option<c_int> {
    let mut value: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as socklen_t;
    // SAFETY: value and len are valid for writes of the sizes given; getsockopt is not hooked.
    let rc = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            opt,
            (&mut value as *mut c_int).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(value)
}

/// The socket's type (`SOCK_STREAM`, ...) and protocol, or None when `fd` is not a socket.
/// One getsockopt in the common cases: the protocol says TCP or UDP. (A raw socket opened for
/// TCP or UDP then reads as that protocol; rules do not depend on the protocol.)
pub fn socket_kind(fd: c_int) -> Option<(c_int, Proto)> {
    const IPPROTO_MPTCP: c_int = 262;
    const IPPROTO_UDPLITE: c_int = 136;
    match sockopt(fd, libc::SO_PROTOCOL)? {
        libc::IPPROTO_TCP | IPPROTO_MPTCP => return Some((libc::SOCK_STREAM, Proto::Tcp)),
        libc::IPPROTO_UDP | IPPROTO_UDPLITE => return Some((libc::SOCK_DGRAM, Proto::Udp)),
        _ => {}
    }
    let ty = sockopt(fd, libc::SO_TYPE)?;
    let proto = match ty {
        libc::SOCK_STREAM => Proto::Tcp,
        libc::SOCK_RAW => Proto::Raw,
        _ => match sockopt(fd, libc::SO_PROTOCOL) {
            Some(libc::IPPROTO_ICMP) | Some(libc::IPPROTO_ICMPV6) => Proto::Icmp,
            _ => Proto::Udp,
        },
    };
    Some((ty, proto))
}
