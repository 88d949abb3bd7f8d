//! Help the user asks for (R2): the one-time code a person at the endpoint reads to the service
//! desk over the phone, as plain values. The relay draws the randomness and keeps the requests;
//! here is what a code looks like, how what an operator typed is read, and when a request lapses.

/// Digits in a code: short enough to read out. The code links a caller to a request for the
/// operators who may serve that endpoint (they see it in their queue, to compare with what the
/// caller reads out); it opens nothing by itself: the session still needs the policy and the
/// user's consent.
pub const CODE_DIGITS: usize = 6;

/// How long a request stays open by default (R2: ten minutes).
pub const DEFAULT_TTL_S: u64 = 600;

/// Largest `u32` below which the value is drawn evenly over the codes (the rest is redrawn).
const EVEN_BELOW: u32 = u32::MAX - (u32::MAX % 1_000_000);

/// A code from four random bytes, or `None` when they fall in the uneven tail (draw again), so
/// every code is equally likely.
pub fn code_from(random: [u8; 4]) -> Option<String> {
    let n = u32::from_be_bytes(random);
    (n < EVEN_BELOW).then(|| format!("{:06}", n % 1_000_000))
}

/// What an operator typed, as a code: digits, with spaces and dashes ignored ("123 456",
/// "123-456"). Anything else, or the wrong number of digits, is no code.
pub fn normalise(typed: &str) -> Option<String> {
    let mut code = String::with_capacity(CODE_DIGITS);
    for c in typed.trim().chars() {
        match c {
            '0'..='9' => code.push(c),
            ' ' | '-' => {}
            _ => return None,
        }
    }
    (code.len() == CODE_DIGITS).then_some(code)
}

/// A code as people read it: two groups of three.
pub fn spoken(code: &str) -> String {
    if code.len() == CODE_DIGITS && code.is_ascii() {
        format!("{} {}", &code[..3], &code[3..])
    } else {
        code.to_owned()
    }
}

/// Whether a request that lapses at `expires_ms` is still open at `now_ms`.
pub fn is_open(expires_ms: u64, now_ms: u64) -> bool {
    now_ms < expires_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_six_digits_drawn_evenly() {
        assert_eq!(code_from([0, 0, 0, 7]).as_deref(), Some("000007"));
        assert_eq!(code_from(1_234_567u32.to_be_bytes()).as_deref(), Some("234567"));
        // The uneven tail is redrawn, not folded onto the low codes.
        assert_eq!(code_from(u32::MAX.to_be_bytes()), None);
        assert_eq!(code_from(EVEN_BELOW.to_be_bytes()), None);
        assert_eq!(code_from((EVEN_BELOW - 1).to_be_bytes()).as_deref(), Some("999999"));
    }

    #[test]
    fn typed_codes_ignore_spaces_and_dashes_and_nothing_else() {
        assert_eq!(normalise(" 123 456 ").as_deref(), Some("123456"));
        assert_eq!(normalise("123-456").as_deref(), Some("123456"));
        for bad in ["", "12345", "1234567", "12a456", "１２３４５６", "123_456"] {
            assert_eq!(normalise(bad), None, "{bad:?}");
        }
        assert_eq!(spoken("123456"), "123 456");
    }

    #[test]
    fn a_request_is_open_until_its_expiry() {
        assert!(is_open(1_000, 999));
        assert!(!is_open(1_000, 1_000));
    }
}
