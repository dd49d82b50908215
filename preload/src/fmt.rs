//! Formatting into a fixed buffer: the guard never allocates on a hook path.

use std::net::IpAddr;

/// A byte writer over a fixed buffer that silently truncates and remembers it did.
pub struct Buf<'a> {
    buf: &'a mut [u8],
    len: usize,
    truncated: bool,
}

impl<'a> Buf<'a> {
    pub fn new(buf: &'a mut [u8]) -> Self {
        Buf {
            buf,
            len: 0,
            truncated: false,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Room left, for callers that must keep space for a closing suffix.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.len
    }

    pub fn bytes(&mut self, s: &[u8]) {
        let n = s.len().min(self.remaining());
        self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
        if n < s.len() {
            self.truncated = true;
        }
    }

    pub fn str(&mut self, s: &str) {
        self.bytes(s.as_bytes());
    }

    pub fn uint(&mut self, mut v: u64) {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.bytes(&digits[i..]);
    }

    pub fn int(&mut self, v: i64) {
        if v < 0 {
            self.bytes(b"-");
        }
        self.uint(v.unsigned_abs());
    }

    pub fn ip(&mut self, ip: IpAddr) {
        use std::fmt::Write;
        // core::fmt writes through our `write_str`; it does not allocate.
        let _ = write!(self, "{ip}");
    }

    /// A JSON string: quotes, escapes, and U+FFFD for bytes that are not UTF-8. A string cut
    /// short by the buffer's end is still closed, so the output stays valid JSON only if the
    /// caller checks `truncated` and rewrites.
    pub fn json_str(&mut self, s: &[u8]) {
        self.bytes(b"\"");
        for chunk in s.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '"' => self.bytes(b"\\\""),
                    '\\' => self.bytes(b"\\\\"),
                    '\n' => self.bytes(b"\\n"),
                    '\r' => self.bytes(b"\\r"),
                    '\t' => self.bytes(b"\\t"),
                    c if (c as u32) < 0x20 || c == '\u{7f}' => {
                        const HEX: &[u8; 16] = b"0123456789abcdef";
                        let v = c as u32;
                        self.bytes(&[
                            b'\\',
                            b'u',
                            b'0',
                            b'0',
                            HEX[(v >> 4) as usize & 0xf],
                            HEX[v as usize & 0xf],
                        ]);
                    }
                    c => {
                        let mut tmp = [0u8; 4];
                        self.bytes(c.encode_utf8(&mut tmp).as_bytes());
                    }
                }
            }
            if !chunk.invalid().is_empty() {
                self.str("\u{fffd}");
            }
        }
        self.bytes(b"\"");
    }
}

impl std::fmt::Write for Buf<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.str(s);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_are_escaped_and_always_valid_utf8() {
        let mut raw = [0u8; 64];
        let mut b = Buf::new(&mut raw);
        b.json_str(b"a\"b\\c\n\x01\xff");
        assert_eq!(
            std::str::from_utf8(b.as_bytes()).unwrap(),
            "\"a\\\"b\\\\c\\n\\u0001\u{fffd}\""
        );
    }

    #[test]
    fn writes_past_the_end_truncate() {
        let mut raw = [0u8; 4];
        let mut b = Buf::new(&mut raw);
        b.uint(123456);
        assert!(b.truncated());
        assert_eq!(b.as_bytes(), b"1234");
    }
}
