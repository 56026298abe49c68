//! Long turns cut into passages a memory can hold and the embedding model can read whole.

/// Longest memory a turn becomes, in bytes: about what the embedding model reads (MiniLM
/// stops at 256 word pieces) and a small share of a memory block. Longer turns are cut into
/// consecutive passages.
pub(crate) const PASSAGE_BYTES: usize = 640;

/// `text` cut into passages of at most [`PASSAGE_BYTES`] (a single longer word excepted),
/// at the last line break, else sentence end, else space before the limit. Each passage is a
/// slice of the text, trimmed, so nothing is reworded.
pub(crate) fn passages(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while rest.len() > PASSAGE_BYTES {
        let mut limit = PASSAGE_BYTES;
        while !rest.is_char_boundary(limit) {
            limit -= 1;
        }
        let head = &rest[..limit];
        let sentence_end = [". ", "? ", "! "]
            .iter()
            .filter_map(|end| head.rfind(end).map(|i| i + 1))
            .max();
        let candidates = [
            head.rfind('\n'),
            sentence_end,
            head.rfind(char::is_whitespace),
        ];
        // A break in the second half of the window keeps passages even; any break beats
        // cutting a word.
        let cut = candidates
            .iter()
            .flatten()
            .copied()
            .find(|&i| i >= limit / 2)
            .or_else(|| candidates.iter().flatten().copied().find(|&i| i > 0))
            .unwrap_or(limit);
        let (piece, tail) = rest.split_at(cut);
        if !piece.trim().is_empty() {
            out.push(piece.trim());
        }
        rest = tail.trim_start();
    }
    if !rest.is_empty() {
        out.push(rest);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passages_are_the_text_itself_cut_at_breaks_within_the_limit() {
        assert_eq!(passages("  short turn \n"), vec!["short turn"]);
        assert!(passages("   ").is_empty());
        let paragraph = "Une phrase accentuée, déjà écrite. ".repeat(12);
        let text = format!("{paragraph}\n{paragraph}\n{}", "é".repeat(700));
        let parts = passages(&text);
        assert!(parts.len() >= 4, "{parts:?}");
        let mut rest = text.as_str();
        for p in &parts {
            assert!(p.len() <= PASSAGE_BYTES, "{} bytes", p.len());
            // A slice of the text, in order, nothing reworded.
            let at = rest.find(p).expect("in order");
            rest = &rest[at + p.len()..];
        }
        // Cut at the line break, then at sentence ends, and a word with no break at the limit.
        assert_eq!(parts[0], paragraph.trim());
        assert!(parts[1].ends_with('.'));
        assert!(parts.last().is_some_and(|p| p.chars().all(|c| c == 'é')));
    }
}
