//! The event channel's datagram framing, shared by the library (which sends) and the launcher
//! (which receives). docs/design.md, *The event channel's wire format*.
//!
//! ```text
//! datagram  magic[4] = "EGEV"  version:u8 = 1  reserved[3] = 0  key[16]  body
//! ```
//! `key` is the run's event key from the sealed policy (`PolicyView::event_key`), or all zero
//! from a process that holds no valid policy; `body` is one JSON object (the event).

use crate::wire::EVENT_KEY_LEN;

/// The check-in area: where a process with the run's counters writes its `process` record
/// instead of sending it (no system call, no launcher wake-up). It follows the counter slots
/// in the counters memfd (at `slots * 8`) and is this long:
///
/// ```text
/// area    next:u64 (byte offset of the next free record; starts at CHECKIN_ALIGN)
///         ended:u64 (set to 1 by the launcher when the run ended normally)  pad to 64
/// record  at a multiple of CHECKIN_ALIGN: header:u64  body (one JSON object, UTF-8)  zero pad
///         header = CHECKIN_MAGIC | body_len << 32, stored (release) after the body; 0 until then
/// ```
/// A writer reserves `span(len)` bytes with one atomic add on `next`; when the area is full
/// the record goes as a datagram instead. A body is valid UTF-8, which never holds the bytes
/// 0xFF 0xFE, so a header can be told from body bytes when a reader resynchronises after a
/// writer that died between reserving and publishing.
pub const CHECKIN_LEN: u64 = 8 << 20;
pub const CHECKIN_ALIGN: u64 = 64;
/// Low 32 bits of a published record header (bytes FF FE 'C' 'I').
pub const CHECKIN_MAGIC: u64 = 0x4943_feff;

/// The bytes a record with a body of `len` bytes takes, header and padding included.
pub const fn checkin_span(len: usize) -> u64 {
    (8 + len as u64).div_ceil(CHECKIN_ALIGN) * CHECKIN_ALIGN
}

/// The body length a published header announces; None for an unpublished or foreign word.
pub fn checkin_body_len(header: u64) -> Option<usize> {
    (header & 0xffff_ffff == CHECKIN_MAGIC).then_some((header >> 32) as usize)
}

/// The framing's magic and version: bumped when the framing or the body's meaning changes.
pub const MAGIC: [u8; 4] = *b"EGEV";
pub const VERSION: u8 = 1;
/// Bytes before the body.
pub const HEADER_LEN: usize = 8 + EVENT_KEY_LEN;

/// The header of every datagram this process sends under `key`.
pub fn header(key: &[u8; EVENT_KEY_LEN]) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..4].copy_from_slice(&MAGIC);
    h[4] = VERSION;
    h[8..].copy_from_slice(key);
    h
}

/// A received datagram's key and body; None when it is not framed as this version's events.
pub fn split(datagram: &[u8]) -> Option<(&[u8], &[u8])> {
    if datagram.len() < HEADER_LEN || datagram[..4] != MAGIC || datagram[4] != VERSION {
        return None;
    }
    if datagram[5..8] != [0, 0, 0] {
        return None;
    }
    Some((&datagram[8..HEADER_LEN], &datagram[HEADER_LEN..]))
}

/// Compares two keys in time independent of where they differ.
pub fn same_key(a: &[u8], b: &[u8; EVENT_KEY_LEN]) -> bool {
    if a.len() != EVENT_KEY_LEN {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkin_spans_are_aligned_and_hold_their_record() {
        for len in [0, 1, 55, 56, 57, 1000] {
            let span = checkin_span(len);
            assert_eq!(span % CHECKIN_ALIGN, 0);
            assert!(span >= 8 + len as u64 && span < 8 + len as u64 + CHECKIN_ALIGN);
        }
        assert_eq!(checkin_body_len(CHECKIN_MAGIC | 300 << 32), Some(300));
        assert_eq!(checkin_body_len(0), None);
        assert_eq!(checkin_body_len(u64::from_le_bytes(*b"{\"type\":")), None);
    }

    #[test]
    fn header_round_trips() {
        let key = [7u8; EVENT_KEY_LEN];
        let mut d = header(&key).to_vec();
        d.extend_from_slice(b"{}");
        let (k, body) = split(&d).expect("framed");
        assert!(same_key(k, &key));
        assert_eq!(body, b"{}");
    }

    #[test]
    fn unframed_and_other_versions_are_refused() {
        let key = [1u8; EVENT_KEY_LEN];
        assert!(split(b"{\"type\":\"process\"}").is_none());
        assert!(split(&header(&key)[..HEADER_LEN - 1]).is_none());
        let mut d = header(&key);
        d[4] = 2;
        assert!(split(&d).is_none());
        let mut d = header(&key);
        d[6] = 1;
        assert!(split(&d).is_none());
    }

    #[test]
    fn keys_compare_whole() {
        let key = [9u8; EVENT_KEY_LEN];
        let mut other = key;
        other[15] ^= 1;
        assert!(!same_key(&other, &key));
        assert!(!same_key(&key[..15], &key));
        assert!(same_key(&key, &key));
    }
}
