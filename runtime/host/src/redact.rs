//! Redaction of a connection's secrets from every string the host hands out on a
//! connector's behalf (errors, log lines, the request log), and the bounding of such a
//! string to a size limit without ever cutting a secret in two.
//!
//! A secret is hidden in every form this module knows a connector or an API may give
//! it back in: as it is; URL-encoded (`%XX` in either case, `+` for a space, in any
//! mix); JSON-escaped (`\"`, `\\`, `\/`); base64 (standard or URL-safe alphabet, at any
//! alignment, so the middle of `Basic base64(user:secret)` is found too); and cut short:
//! a prefix at the end of the string or before a cut marker (`…`, `...`), a suffix at
//! its start or after a cut marker. It must never return any of those forms, and never
//! panics on any input.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};

/// Secrets shorter than this are not redacted: they would hide ordinary text.
pub const MIN_SECRET_BYTES: usize = 3;
/// The shortest prefix or suffix of a secret redacted where a string was cut (at its
/// end or start, next to a cut marker). Shorter pieces say too little of a secret to be
/// worth hiding the ordinary text they would match.
pub const MIN_PARTIAL_BYTES: usize = 4;
/// The shortest base64 form of a secret redacted (secrets of 5 bytes or less have base64
/// forms too short to tell from ordinary text at some alignments).
pub const MIN_ENCODED_BYTES: usize = 6;
/// What marks a string cut short: a secret's prefix before one (or suffix after one) is
/// redacted as if the string ended (or began) there.
pub const CUT_MARKERS: &[&str] = &["…", "..."];
/// What a secret, or a piece of one, is replaced with.
pub const MASK: &str = "***";
/// How much of a long string is redacted before it is cut to its limit, as a multiple
/// of the limit: redaction can only shorten a string, so scanning past this buys
/// nothing but time (and a string can be 20 MB).
pub const SCAN_FACTOR: usize = 4;

/// Finds and masks the secrets of one grant.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    /// Each secret, and each of its base64 forms, as bytes.
    patterns: Vec<Vec<u8>>,
    /// Bytes that may start a match (a pattern's first byte, or an escape).
    starts: Vec<bool>,
    /// The longest pattern, in bytes.
    longest: usize,
}

impl Redactor {
    /// A redactor of `secrets` (those shorter than [`MIN_SECRET_BYTES`] are ignored).
    pub fn new<S: AsRef<str>>(secrets: &[S]) -> Self {
        let mut patterns: Vec<Vec<u8>> = Vec::new();
        for secret in secrets.iter().map(AsRef::as_ref) {
            if secret.len() < MIN_SECRET_BYTES {
                continue;
            }
            patterns.push(secret.as_bytes().to_vec());
            patterns.extend(base64_forms(secret.as_bytes()));
        }
        patterns.sort();
        patterns.dedup();
        let mut starts = vec![false; 256];
        for p in &patterns {
            starts[usize::from(p[0])] = true;
            if p[0] == b' ' {
                starts[usize::from(b'+')] = true;
            }
        }
        if !patterns.is_empty() {
            starts[usize::from(b'%')] = true;
            starts[usize::from(b'\\')] = true;
        }
        let longest = patterns.iter().map(Vec::len).max().unwrap_or(0);
        Self {
            patterns,
            starts,
            longest,
        }
    }

    /// Whether there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// `text` with every secret, in every known form and every cut piece, replaced by
    /// [`MASK`].
    pub fn redact(&self, text: &str) -> String {
        if self.is_empty() {
            return text.to_owned();
        }
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        // Everything before `copied` is already in `out`.
        let mut copied = 0;
        let mut i = 0;
        while i < bytes.len() {
            let after_cut = i == 0
                || CUT_MARKERS
                    .iter()
                    .any(|m| bytes[..i].ends_with(m.as_bytes()));
            let found = if self.starts[usize::from(bytes[i])] || after_cut {
                self.longest_match(bytes, i, after_cut)
            } else {
                0
            };
            if found == 0 {
                i += 1;
                continue;
            }
            out.extend_from_slice(&bytes[copied..i]);
            out.extend_from_slice(MASK.as_bytes());
            i += found;
            copied = i;
        }
        out.extend_from_slice(&bytes[copied..]);
        // Matches start and end on character boundaries of valid UTF-8 (a secret is a
        // string; escapes are ASCII), so this never loses anything.
        String::from_utf8(out)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
    }

    /// `text` redacted, then cut to at most `max_bytes` (on a character boundary, with
    /// a marker naming `limit` and the size it had) when longer. Cutting after
    /// redaction means a cut can never leave part of a secret showing.
    pub fn seal(&self, text: &str, max_bytes: usize, limit: &str) -> String {
        // An encoded secret is at most 3 bytes of text per byte of secret.
        let window = max_bytes
            .saturating_mul(SCAN_FACTOR)
            .saturating_add(self.longest.saturating_mul(3));
        let scanned = &text[..text.floor_char_boundary(window)];
        let redacted = self.redact(scanned);
        if scanned.len() == text.len() && redacted.len() <= max_bytes {
            return redacted;
        }
        let marker = format!(
            "… [cut: {} bytes in all; {limit} is {max_bytes}]",
            text.len()
        );
        let room = max_bytes.saturating_sub(marker.len());
        let kept = &redacted[..redacted.floor_char_boundary(room)];
        // The cut may end the text in what looks like the start of a secret.
        let mut sealed = self.redact(kept);
        sealed.push_str(&marker);
        sealed
    }

    /// The length of the longest piece of text at `i` to mask, or 0.
    fn longest_match(&self, text: &[u8], i: usize, after_cut: bool) -> usize {
        let mut best = 0;
        for p in &self.patterns {
            let (consumed, matched) = match_at(text, i, p);
            let end = i + consumed;
            let masked =
                matched == p.len() || (matched >= MIN_PARTIAL_BYTES && ends_or_cut(text, end));
            if masked {
                best = best.max(consumed);
            }
            if after_cut {
                best = best.max(suffix_at(text, i, p));
            }
        }
        best
    }
}

/// Whether `text` ends at `end` or a cut marker follows it.
fn ends_or_cut(text: &[u8], end: usize) -> bool {
    end == text.len()
        || CUT_MARKERS
            .iter()
            .any(|m| text[end..].starts_with(m.as_bytes()))
}

/// The longest suffix of `p` (of at least [`MIN_PARTIAL_BYTES`], shorter than `p`)
/// that `text` holds whole at `i`, as text consumed; 0 if none.
fn suffix_at(text: &[u8], i: usize, p: &[u8]) -> usize {
    for from in 1..p.len().saturating_sub(MIN_PARTIAL_BYTES - 1) {
        let suffix = &p[from..];
        let (consumed, matched) = match_at(text, i, suffix);
        if matched == suffix.len() {
            return consumed;
        }
    }
    0
}

/// How far `p` matches `text` at `i`: (bytes of text consumed, bytes of `p` matched).
/// Exactly, or with any byte URL-encoded or JSON-escaped; the better of the two.
fn match_at(text: &[u8], i: usize, p: &[u8]) -> (usize, usize) {
    let rest = &text[i..];
    let exact = rest.iter().zip(p).take_while(|(a, b)| a == b).count();
    if exact == p.len() {
        return (exact, exact);
    }
    let (mut t, mut m) = (0, 0);
    while m < p.len() && t < rest.len() {
        let b = p[m];
        let step = if rest[t] == b'%' && decode_hex(rest.get(t + 1..t + 3)) == Some(b) {
            3
        } else if rest[t] == b || (b == b' ' && rest[t] == b'+') {
            1
        } else if rest[t] == b'\\'
            && rest.get(t + 1) == Some(&b)
            && matches!(b, b'"' | b'\\' | b'/')
        {
            2
        } else {
            break;
        };
        t += step;
        m += 1;
    }
    if m > exact { (t, m) } else { (exact, exact) }
}

/// The byte two hex digits (either case) spell.
fn decode_hex(digits: Option<&[u8]>) -> Option<u8> {
    let digits = digits?;
    let hi = char::from(*digits.first()?).to_digit(16)?;
    let lo = char::from(*digits.get(1)?).to_digit(16)?;
    u8::try_from(hi * 16 + lo).ok()
}

/// The base64 forms of `secret` that appear whatever bytes surround it: for each of
/// the three alignments and both alphabets, the characters that depend on the
/// secret's bytes alone.
fn base64_forms(secret: &[u8]) -> Vec<Vec<u8>> {
    let mut forms = Vec::new();
    for align in 0..3usize {
        let mut padded = vec![0u8; align];
        padded.extend_from_slice(secret);
        // Characters of 6 bits: the first wholly within the secret, and one past the
        // last wholly within it.
        let first = (align * 8).div_ceil(6);
        let end = padded.len() * 8 / 6;
        if end <= first || end - first < MIN_ENCODED_BYTES {
            continue;
        }
        for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
            let encoded = engine.encode(&padded);
            if let Some(core) = encoded.as_bytes().get(first..end) {
                forms.push(core.to_vec());
            }
        }
    }
    forms
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "Zq9/Lk+2=x!Ab7#Pc4$";

    fn r() -> Redactor {
        Redactor::new(&[SECRET])
    }

    fn shows_none_of_it(out: &str) {
        // No piece of the secret of MIN_PARTIAL_BYTES or more survives.
        for len in MIN_PARTIAL_BYTES..=SECRET.len() {
            for start in 0..=SECRET.len() - len {
                let piece = &SECRET[start..start + len];
                assert!(!out.contains(piece), "{piece:?} shows in {out:?}");
            }
        }
    }

    #[test]
    fn masks_the_secret_as_it_is() {
        assert_eq!(r().redact(&format!("Bearer {SECRET}!")), "Bearer ***!");
        let g = Redactor::new(&["s3cr3t-token"]);
        assert_eq!(g.redact("a s3cr3t-token b s3cr3t-token"), "a *** b ***");
    }

    #[test]
    fn masks_a_prefix_at_the_end_and_a_suffix_at_the_start() {
        let cut = &SECRET[..18];
        assert_eq!(r().redact(&format!("401: token {cut}")), "401: token ***");
        assert_eq!(
            r().redact(&format!("{} was sent", &SECRET[3..])),
            "*** was sent"
        );
        // Too short to tell from ordinary text.
        assert_eq!(r().redact("ends in Zq9"), "ends in Zq9");
    }

    #[test]
    fn masks_a_prefix_before_a_cut_marker_and_a_suffix_after_one() {
        let cut = &SECRET[..10];
        assert_eq!(
            r().redact(&format!("body: {cut}… (more) and {cut}... again")),
            "body: ***… (more) and ***... again"
        );
        assert_eq!(
            r().redact(&format!("…{} the rest", &SECRET[6..])),
            "…*** the rest"
        );
        // A prefix in the middle of ordinary text is not a cut.
        assert_eq!(r().redact("Zq9/Lk is a word"), "Zq9/Lk is a word");
    }

    #[test]
    fn masks_url_encoded_and_json_escaped_forms() {
        let upper = "Zq9%2FLk%2B2%3Dx%21Ab7%23Pc4%24";
        let out = r().redact(&format!("GET /x?token={upper}&a=1"));
        assert_eq!(out, "GET /x?token=***&a=1");
        let lower = "Zq9%2fLk%2b2%3dx%21Ab7%23Pc4%24";
        assert_eq!(r().redact(&format!("q={lower}")), "q=***");
        let r2 = Redactor::new(&["pass word\"x"]);
        assert_eq!(r2.redact("f=pass+word%22x"), "f=***");
        assert_eq!(r2.redact(r#"{"p":"pass word\"x"}"#), r#"{"p":"***"}"#);
        // A URL-encoded secret cut short at the end.
        assert_eq!(r().redact("token=Zq9%2FLk%2B2%3Dx"), "token=***");
    }

    #[test]
    fn masks_base64_at_every_alignment() {
        for user in ["", "u", "us", "use", "user"] {
            for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
                let header = engine.encode(format!("{user}:{SECRET}"));
                let out = r().redact(&format!("Authorization: Basic {header}"));
                assert!(out.contains(MASK), "{user}: {out}");
                let forms = base64_forms(SECRET.as_bytes());
                for form in &forms {
                    assert!(!out.contains(std::str::from_utf8(form).unwrap()), "{out}");
                }
                // What is left of the encoding decodes to no piece of the secret.
                let left: String = out
                    .trim_start_matches("Authorization: Basic ")
                    .replace(MASK, "");
                // The characters of the user's bytes, and at most two of each edge.
                let bound = (user.len() + 1) * 4 / 3 + 4;
                assert!(left.len() <= bound, "{user}: {left} left of {header}");
            }
        }
    }

    #[test]
    fn short_secrets_are_ignored_and_no_secrets_change_nothing() {
        assert_eq!(Redactor::new(&["ab"]).redact("ab cd"), "ab cd");
        assert_eq!(Redactor::new::<&str>(&[]).redact("x… %2F \\"), "x… %2F \\");
        assert!(Redactor::new::<&str>(&[]).is_empty());
    }

    #[test]
    fn overlapping_secrets_mask_the_longest() {
        let r = Redactor::new(&["abcdef", "abcdefghij"]);
        assert_eq!(r.redact("x abcdefghij y abcdef z"), "x *** y *** z");
    }

    #[test]
    fn seal_redacts_first_then_cuts_on_a_char_boundary_with_a_marker() {
        let r = r();
        let long = format!("{}{SECRET}{}", "é".repeat(100), "x".repeat(10_000));
        let sealed = r.seal(&long, 256, "max_error_bytes");
        assert!(sealed.len() <= 256, "{}", sealed.len());
        assert!(sealed.contains("max_error_bytes is 256"), "{sealed}");
        assert!(
            sealed.contains(&format!("{} bytes in all", long.len())),
            "{sealed}"
        );
        shows_none_of_it(&sealed);
        // The cut falls inside the secret of the original: redaction came first.
        let text = format!("{}{SECRET}", "a".repeat(240));
        let sealed = r.seal(&text, 250, "max_error_bytes");
        assert!(sealed.starts_with(&"a".repeat(240)), "{sealed}");
        shows_none_of_it(&sealed);
        // Short enough: unchanged but for redaction.
        assert_eq!(r.seal("short", 250, "max_error_bytes"), "short");
        // A huge string is scanned only near what is kept.
        let huge = "ab".repeat(10 << 20);
        assert!(r.seal(&huge, 4096, "max_error_bytes").len() <= 4096);
    }

    #[test]
    fn seal_never_leaves_a_prefix_at_the_cut() {
        let r = r();
        // Ordinary text that happens to hold a long prefix of the secret, cut there.
        let text = format!(
            "{}{}ZZZZ{}",
            "a".repeat(200),
            &SECRET[..12],
            "b".repeat(500)
        );
        let marker_len = "… [cut: 716 bytes in all; max_error_bytes is 300]".len();
        let sealed = r.seal(&text, 200 + 10 + marker_len, "max_error_bytes");
        shows_none_of_it(&sealed);
    }

    #[test]
    fn never_panics_on_odd_text() {
        let r = Redactor::new(&["ééé-secret", "%%%\\\\"]);
        for text in [
            "%",
            "%2",
            "%é",
            "\\",
            "…",
            "é…é",
            "%%%\\\\",
            "ééé-sec",
            "…ret",
        ] {
            let _ = r.redact(text);
            let _ = r.seal(text, 1, "x");
        }
        assert_eq!(r.redact("ééé-secret"), MASK);
        assert_eq!(r.redact("%%%\\\\ "), "*** ");
    }
}
