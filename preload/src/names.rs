//! Names that resolve without a query leaving the host: numeric forms, `localhost`, and names
//! in `/etc/hosts`. Block mode lets libc resolve these as usual; their connects are checked.

use std::net::IpAddr;

/// True for a dotted-quad IPv4 address or an IPv6 address (with an optional `%scope`).
pub fn is_numeric(name: &[u8]) -> bool {
    let Ok(s) = std::str::from_utf8(name) else {
        return false;
    };
    if s.parse::<IpAddr>().is_ok() {
        return true;
    }
    match s.split_once('%') {
        Some((addr, scope)) => !scope.is_empty() && addr.parse::<std::net::Ipv6Addr>().is_ok(),
        None => false,
    }
}

/// True when `name` looks like one of the short or hex IPv4 forms `inet_aton` accepts
/// (`127.1`, `0x7f.1`, `2130706433`). Only a hint: callers then resolve it with
/// `AI_NUMERICHOST`, so libc never sends a query for it whatever it decides.
pub fn looks_numeric(name: &[u8]) -> bool {
    if is_numeric(name) {
        return true;
    }
    let Ok(s) = std::str::from_utf8(name) else {
        return false;
    };
    let mut count = 0;
    for part in s.split('.') {
        count += 1;
        if count > 4 || !aton_part(part) {
            return false;
        }
    }
    count > 0
}

fn aton_part(p: &str) -> bool {
    if let Some(hex) = p.strip_prefix("0x").or_else(|| p.strip_prefix("0X")) {
        return hex.bytes().all(|b| b.is_ascii_hexdigit());
    }
    !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())
}

/// `localhost`, `localhost.` and anything below `.localhost` (RFC 6761).
pub fn is_localhost(name: &[u8]) -> bool {
    let name = name.strip_suffix(b".").unwrap_or(name);
    name.eq_ignore_ascii_case(b"localhost")
        || (name.len() > 10 && name[name.len() - 10..].eq_ignore_ascii_case(b".localhost"))
}

/// True when glibc's `files` source answers `name` for `family` from `/etc/hosts`, so that it
/// does not go on to ask DNS: a line lists exactly that name (glibc compares names as given,
/// so `db.` is not `db`) with an address of that family (`AF_UNSPEC`: any family).
pub fn in_etc_hosts(name: &[u8], family: libc::c_int) -> bool {
    !name.is_empty()
        && any_hosts_line(|line| {
            line_names(line, name)
                && matches!(
                    (family, line_addr(line)),
                    (libc::AF_INET, Some(IpAddr::V4(_)))
                        | (libc::AF_INET6, Some(IpAddr::V6(_)))
                        | (libc::AF_UNSPEC, Some(_))
                )
        })
}

/// True when `ip` is the address of a line of `/etc/hosts` (a reverse lookup answered there).
pub fn addr_in_etc_hosts(ip: IpAddr) -> bool {
    let ip = egress_policy::canonical_ip(ip);
    any_hosts_line(|line| line_addr(line).is_some_and(|a| egress_policy::canonical_ip(a) == ip))
}

fn line_addr(line: &[u8]) -> Option<IpAddr> {
    let first = line
        .split(|b| b.is_ascii_whitespace())
        .find(|f| !f.is_empty())?;
    std::str::from_utf8(first).ok()?.parse().ok()
}

/// True when `pred` holds for a line of `/etc/hosts`. Streams the file through a small stack
/// buffer; a line longer than the buffer (1 KiB) is skipped.
fn any_hosts_line(mut pred: impl FnMut(&[u8]) -> bool) -> bool {
    // SAFETY: a NUL-terminated literal path; open is not hooked.
    let fd = unsafe { libc::open(c"/etc/hosts".as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return false;
    }
    // Small: lookups run on whatever stack the program gives them. A longer line is skipped,
    // which can only make a name a lookup to decide.
    let mut buf = [0u8; 1024];
    let mut held = 0; // bytes of an unfinished line kept at the start of buf
    let mut skipping = false; // inside a line longer than the buffer
    let mut found = false;
    loop {
        // SAFETY: reading into the unused tail of buf.
        let n = unsafe { libc::read(fd, buf[held..].as_mut_ptr().cast(), buf.len() - held) };
        if n < 0 {
            break;
        }
        let end = held + n as usize;
        let eof = n == 0;
        let mut start = 0;
        while let Some(nl) = buf[start..end].iter().position(|&b| b == b'\n') {
            if !skipping && pred(&buf[start..start + nl]) {
                found = true;
            }
            skipping = false;
            start += nl + 1;
        }
        if found {
            break;
        }
        if eof {
            if !skipping && pred(&buf[start..end]) {
                found = true;
            }
            break;
        }
        if start == 0 && end == buf.len() {
            skipping = true; // an overlong line: skip to its end
            held = 0;
        } else {
            buf.copy_within(start..end, 0);
            held = end - start;
        }
    }
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    found
}

/// True when a hosts(5) line lists `name` as one of its names.
fn line_names(line: &[u8], name: &[u8]) -> bool {
    let line = match line.iter().position(|&b| b == b'#') {
        Some(i) => &line[..i],
        None => line,
    };
    line.split(|b| b.is_ascii_whitespace())
        .filter(|f| !f.is_empty())
        .skip(1)
        .any(|f| f.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_forms_that_libc_parses_are_numeric() {
        for n in ["1.2.3.4", "::1", "fe80::1%lo"] {
            assert!(is_numeric(n.as_bytes()), "{n}");
        }
        for n in ["127.1", "0x7f.1", "2130706433"] {
            assert!(!is_numeric(n.as_bytes()), "{n}");
            assert!(looks_numeric(n.as_bytes()), "{n}");
        }
        for n in ["example.com", "deadbeef", "1.2.3.4.5", "", "a.1"] {
            assert!(!looks_numeric(n.as_bytes()), "{n}");
        }
    }

    #[test]
    fn localhost_names() {
        assert!(is_localhost(b"localhost"));
        assert!(is_localhost(b"LocalHost."));
        assert!(is_localhost(b"db.localhost"));
        assert!(!is_localhost(b"notlocalhost"));
        assert!(!is_localhost(b"localhost.example"));
    }

    #[test]
    fn hosts_lines_match_names_not_addresses_or_comments() {
        assert!(line_names(b"127.0.0.1 localhost db db.local", b"db"));
        assert!(line_names(b"10.0.0.1\tHost.Example # x", b"host.example"));
        assert!(
            !line_names(b"10.0.0.1 db", b"db."),
            "glibc does not strip the dot"
        );
        assert!(!line_names(b"127.0.0.1 localhost # db", b"db"));
        assert!(!line_names(b"db 127.0.0.1", b"db"));
    }
}
