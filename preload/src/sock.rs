//! Reading socket addresses handed to us by C, and the socket's protocol.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use libc::{c_int, sockaddr, socklen_t};

/// What a socket address means for the guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dest {
    /// An IPv4 or IPv6 destination (IPv4-mapped kept as given; the matcher canonicalises).
    Inet { ip: IpAddr, port: u16 },
    /// Family 0 (`AF_UNSPEC`) with the bytes given, read as each family would be (None when
    /// too short for it). A connect reads it as a disconnect; a send on an IPv4 datagram or
    /// raw socket as an IPv4 address, on an IPv6 raw socket as an IPv6 one (`unspec_as_sent`).
    Unspec {
        v4: Option<(Ipv4Addr, u16)>,
        v6: Option<(Ipv6Addr, u16)>,
    },
    /// Not network egress, or malformed: the kernel decides (Unix, netlink, too short for its
    /// family).
    Other,
}

/// The end of the user address space as far as can be known without a system call: 5-level
/// page tables (x86_64) reach 2^56, arm64 at most 2^52 (52-bit virtual addresses). Anything
/// above is the kernel's half or non-canonical: reading it faults.
#[cfg(target_arch = "x86_64")]
const USER_END: usize = 1 << 56;
#[cfg(target_arch = "aarch64")]
const USER_END: usize = 1 << 52;
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const USER_END: usize = usize::MAX;

/// The abstract Unix address named `name` (a leading NUL, then the name; longer names are
/// cut to `sun_path`) and its length: the launcher's sockets (events, policy, kernel layer).
pub fn abstract_addr(name: &[u8]) -> (libc::sockaddr_un, socklen_t) {
    // SAFETY: an all-zero sockaddr_un is valid; family and name are filled in below.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let mut n = 0;
    for (dst, src) in addr.sun_path[1..].iter_mut().zip(name) {
        *dst = *src as libc::c_char;
        n += 1;
    }
    let len = (std::mem::size_of::<libc::sa_family_t>() + 1 + n) as socklen_t;
    (addr, len)
}

/// Whether `len` bytes at `p` can be user memory at all: not in the first page, not beyond the
/// user address space, not wrapping around. A pointer that fails this would make the guard
/// fault where the kernel answers EFAULT; one that passes may still be unmapped, which
/// `mem::readable` finds out. No system call, no memory access.
pub fn plausible<T>(p: *const T, len: usize) -> bool {
    let addr = p as usize;
    // arm64 ignores the top byte of user addresses (tagged pointers: HWASan, MTE).
    #[cfg(target_arch = "aarch64")]
    let addr = addr & ((1usize << 56) - 1);
    addr >= 4096 && addr.checked_add(len).is_some_and(|end| end <= USER_END)
}

/// Whether `read(addr, len)` would read memory the program cannot read: the call must fail
/// with EFAULT, as the kernel's copy of the address would, without the guard reading it.
#[inline]
pub fn unreadable(addr: *const sockaddr, len: socklen_t) -> bool {
    let len = len as usize;
    !addr.is_null()
        && len >= std::mem::size_of::<libc::sa_family_t>()
        && !crate::mem::readable(addr, len.min(std::mem::size_of::<libc::sockaddr_storage>()))
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
        libc::AF_UNSPEC => {
            // SAFETY: at least two readable bytes, as checked.
            unsafe { read_unspec(addr, len) }
        }
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

/// A family-0 address read as IPv4 and as IPv6 (rare: kept out of `read`'s hot path).
///
/// # Safety
/// `addr` must point to at least `len` readable bytes.
#[cold]
#[inline(never)]
unsafe fn read_unspec(addr: *const sockaddr, len: usize) -> Dest {
    let mut b = [0u8; 24];
    let n = len.min(b.len());
    // SAFETY: n <= len readable bytes into a local of at least n bytes.
    unsafe { std::ptr::copy_nonoverlapping(addr.cast::<u8>(), b.as_mut_ptr(), n) };
    let port = u16::from_be_bytes([b[2], b[3]]);
    let v4 = (len >= std::mem::size_of::<libc::sockaddr_in>())
        .then(|| (Ipv4Addr::new(b[4], b[5], b[6], b[7]), port));
    let v6 = (len >= 24).then(|| {
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[8..24]);
        (Ipv6Addr::from(a), port)
    });
    Dest::Unspec { v4, v6 }
}

fn sockopt_at(fd: c_int, level: c_int, opt: c_int) -> Option<c_int> {
    let mut value: c_int = 0;
    let mut len = std::mem::size_of::<c_int>() as socklen_t;
    // SAFETY: value and len are valid for writes of the sizes given; getsockopt is not hooked.
    let rc =
        unsafe { libc::getsockopt(fd, level, opt, (&mut value as *mut c_int).cast(), &mut len) };
    (rc == 0).then_some(value)
}

/// What the kernel sends a family-0 destination to on socket `fd` (three getsockopt calls, only
/// for such destinations): an IPv4 UDP or raw socket reads the bytes as a `sockaddr_in`, an
/// IPv6 raw socket as a `sockaddr_in6`; an IPv6 UDP socket reads it as "no address" (the
/// connected peer); ping sockets refuse it; a stream socket ignores it (or, with
/// `MSG_FASTOPEN`, refuses it).
pub fn unspec_as_sent(fd: c_int, dest: Dest) -> Dest {
    let Dest::Unspec { v4, v6 } = dest else {
        return dest;
    };
    let (Some(domain), Some(ty), Some(protocol)) = (
        sockopt_at(fd, libc::SOL_SOCKET, libc::SO_DOMAIN),
        sockopt_at(fd, libc::SOL_SOCKET, libc::SO_TYPE),
        sockopt_at(fd, libc::SOL_SOCKET, libc::SO_PROTOCOL),
    ) else {
        return Dest::Other;
    };
    let inet = |ip: IpAddr, port| Dest::Inet { ip, port };
    match (domain, ty) {
        (libc::AF_INET, libc::SOCK_DGRAM) if protocol != libc::IPPROTO_ICMP => {
            v4.map_or(Dest::Other, |(ip, port)| inet(IpAddr::V4(ip), port))
        }
        (libc::AF_INET, libc::SOCK_RAW) => {
            v4.map_or(Dest::Other, |(ip, port)| inet(IpAddr::V4(ip), port))
        }
        (libc::AF_INET6, libc::SOCK_RAW) => {
            v6.map_or(Dest::Other, |(ip, port)| inet(IpAddr::V6(ip), port))
        }
        _ => Dest::Other,
    }
}

/// What a raw socket that builds its own IP header sends to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Header {
    /// Not a raw socket (or not a socket): the address given decides.
    None,
    /// A raw socket that sends to the address given (whatever protocol it was opened for).
    Raw,
    /// The destination the header names, and the first hop of a source route among its IPv4
    /// options.
    Dest(IpAddr, Option<IpAddr>),
    /// The first buffer is too short to hold a header: the guard cannot tell.
    Unreadable,
}

/// For a raw socket that builds its own IP header (`IP_HDRINCL`, which `IPPROTO_RAW` implies,
/// or `IPV6_HDRINCL`): the destination in the header the program built, `payload` (its first
/// buffer). A few getsockopt calls; used only for sockets the descriptor table does not know
/// as UDP.
pub fn header_dest(fd: c_int, payload: &[u8]) -> Header {
    if sockopt(fd, libc::SO_TYPE) != Some(libc::SOCK_RAW) {
        return Header::None;
    }
    let hdrincl = |level, opt| sockopt_at(fd, level, opt).is_some_and(|v| v != 0);
    match sockopt(fd, libc::SO_DOMAIN) {
        Some(libc::AF_INET) if hdrincl(libc::IPPROTO_IP, libc::IP_HDRINCL) => {
            let Some(h) = payload.get(..20) else {
                return Header::Unreadable;
            };
            let dest = IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19]));
            let ihl = usize::from(h[0] & 0x0f) * 4;
            let route = payload
                .get(20..ihl.max(20))
                .and_then(crate::route::ipv4_options);
            Header::Dest(dest, route)
        }
        Some(libc::AF_INET6) if hdrincl(libc::IPPROTO_IPV6, libc::IPV6_HDRINCL) => {
            match payload
                .get(24..40)
                .and_then(|b| <[u8; 16]>::try_from(b).ok())
            {
                Some(b) => Header::Dest(IpAddr::V6(Ipv6Addr::from(b)), None),
                None => Header::Unreadable,
            }
        }
        _ => Header::Raw,
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
    sockopt_at(fd, libc::SOL_SOCKET, opt)
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

#[cfg(test)]
mod plausible_tests {
    use super::plausible;

    #[test]
    fn the_first_page_the_kernel_half_and_wrapping_ranges_cannot_be_user_memory() {
        let p = |a: usize| a as *const u8;
        assert!(!plausible(p(1), 16));
        assert!(!plausible(p(4095), 1));
        assert!(plausible(p(4096), 16));
        assert!(!plausible(p(usize::MAX - 7), 16));
        assert!(!plausible(p(0xffff_8000_0000_0000), 16));
        let local = 0u64;
        assert!(plausible(&local as *const u64, 8));
    }
}
