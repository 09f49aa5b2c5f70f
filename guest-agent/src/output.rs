//! Captured output as protocol text.
//!
//! `ExecResult.stdout` and `stderr` are JSON strings, so bytes that are not
//! UTF-8 cannot travel as they are. The agent carries them by lossy
//! replacement: every invalid sequence becomes U+FFFD, valid text passes
//! unchanged. When the cap cut the output in the middle of a multi-byte
//! character, the cut-off partial character is dropped rather than replaced,
//! so a cap never invents a replacement character. The conversion never
//! panics and never splits a character.

use fastvm_proto::agent::CappedOutput;

/// The kept bytes of `out` as text (see the module header).
pub fn to_text(out: CappedOutput) -> String {
    let mut data = out.data;
    if out.truncated {
        let keep = complete_prefix_len(&data);
        data.truncate(keep);
    }
    match String::from_utf8(data) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// Length of `data` without a trailing, incomplete (but so far valid)
/// multi-byte UTF-8 sequence.
fn complete_prefix_len(data: &[u8]) -> usize {
    // A UTF-8 character is at most 4 bytes: look at the last 3 for a lead byte.
    let len = data.len();
    for back in 1..=3.min(len) {
        let b = data[len - back];
        if b & 0xC0 == 0x80 {
            continue; // continuation byte: keep looking for the lead
        }
        let needed = match b {
            0xC2..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF4 => 4,
            _ => return len, // ASCII or invalid lead: nothing partial to drop
        };
        if needed > back && std::str::from_utf8(&data[len - back..]).is_err() {
            return len - back;
        }
        return len;
    }
    len
}

/// Shortens `text` to at most `max` bytes on a character boundary.
pub fn shorten(text: &mut String, max: usize) {
    if text.len() <= max {
        return;
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text.truncate(cut);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capped(bytes: &[u8], cap: u64) -> CappedOutput {
        let mut out = CappedOutput::new(cap);
        out.push(bytes);
        out
    }

    #[test]
    fn valid_text_passes_unchanged() {
        assert_eq!(to_text(capped("héllo ✓".as_bytes(), 100)), "héllo ✓");
    }

    #[test]
    fn invalid_bytes_become_replacement_characters() {
        assert_eq!(to_text(capped(b"a\xffb\xc3", 100)), "a\u{FFFD}b\u{FFFD}");
    }

    #[test]
    fn a_cap_inside_a_character_drops_the_partial_character() {
        // "✓" is E2 9C 93: a cap of 3 keeps "a" and two bytes of it.
        let out = capped("a✓b".as_bytes(), 3);
        assert!(out.truncated);
        assert_eq!(to_text(out), "a");
        let out = capped("aé".as_bytes(), 2);
        assert_eq!(to_text(out), "a");
    }

    #[test]
    fn shorten_respects_character_boundaries() {
        let mut s = "a✓✓".to_string();
        shorten(&mut s, 5);
        assert_eq!(s, "a✓");
        let mut s = "abc".to_string();
        shorten(&mut s, 10);
        assert_eq!(s, "abc");
    }
}
