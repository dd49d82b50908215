//! Reading the question name of a DNS message (RFC 1035 §4.1.2), for `res_send` and for
//! datagrams a program sends to port 53 itself (c-ares, its own resolver).

/// Writes the first question's name, dotted and without a trailing dot, into `out`; returns
/// its length. None for anything that is not a well-formed query with a question.
pub fn question_name(msg: &[u8], out: &mut [u8; 256]) -> Option<usize> {
    let qdcount = u16::from_be_bytes([*msg.get(4)?, *msg.get(5)?]);
    if qdcount == 0 {
        return None;
    }
    let mut at = 12;
    let mut len = 0;
    loop {
        let label = usize::from(*msg.get(at)?);
        at += 1;
        if label == 0 {
            break;
        }
        if label > 63 {
            return None; // a compression pointer or reserved form: not in a plain question
        }
        let bytes = msg.get(at..at + label)?;
        if len > 0 {
            *out.get_mut(len)? = b'.';
            len += 1;
        }
        out.get_mut(len..len + label)?.copy_from_slice(bytes);
        len += label;
        at += label;
    }
    (len > 0).then_some(len)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn query(name: &str) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            m.push(l.len() as u8);
            m.extend_from_slice(l.as_bytes());
        }
        m.extend_from_slice(&[0, 0, 1, 0, 1]);
        m
    }

    #[test]
    fn reads_the_question_name() {
        let mut out = [0u8; 256];
        let n = question_name(&query("secret.other.test"), &mut out).unwrap();
        assert_eq!(&out[..n], b"secret.other.test");
    }

    #[test]
    fn rejects_malformed_messages() {
        let mut out = [0u8; 256];
        assert!(question_name(&[0; 5], &mut out).is_none());
        let mut m = query("a.b");
        m.truncate(14);
        assert!(question_name(&m, &mut out).is_none());
        let mut p = query("a.b");
        p[12] = 0xc0; // compression pointer
        assert!(question_name(&p, &mut out).is_none());
        let mut empty = query("x");
        empty[5] = 0; // no question
        assert!(question_name(&empty, &mut out).is_none());
    }
}
