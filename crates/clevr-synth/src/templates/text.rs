//! A filled-in template's sentence, by the official generator's rules: one of the
//! template's sentence frames, each slot replaced by a random spelling of its value,
//! `[optional words]` kept with probability one half, and "other" dropped where it would
//! be wrong.

use super::format::Synonyms;
use rand::seq::IndexedRandom;
use rand::Rng;

/// The sentence for slot values `filled` (slot name, value; an empty slot has the value
/// `""`, or `"thing"` for a shape), in the order the slots were filled.
pub fn realise(
    frames: &[String],
    filled: &[(String, String)],
    synonyms: &Synonyms,
    rng: &mut impl Rng,
) -> String {
    let mut text = frames.choose(rng).cloned().unwrap_or_default();
    for (name, value) in filled {
        let spelling = synonyms
            .get(value)
            .and_then(|spellings| spellings.choose(rng))
            .unwrap_or(value);
        text = squeeze(&text.replace(name.as_str(), spelling));
    }
    let text = squeeze(&drop_optionals(&text, rng));
    drop_wrong_other(&text, filled)
}

/// Runs of whitespace as one space, none at the ends.
fn squeeze(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Each `[…]` with no `[` inside, leftmost first, replaced by its content or by nothing
/// with equal chance.
fn drop_optionals(text: &str, rng: &mut impl Rng) -> String {
    let mut text = text.to_string();
    while let Some((open, close)) = first_optional(&text) {
        let content = if rng.random_bool(0.5) {
            text[open + 1..close].to_string()
        } else {
            String::new()
        };
        text.replace_range(open..=close, &content);
    }
    text
}

/// Byte positions of the first `[` that is followed by a `]` before any other `[`.
fn first_optional(text: &str) -> Option<(usize, usize)> {
    let bytes = text.as_bytes();
    for (open, _) in text.match_indices('[') {
        for (offset, &b) in bytes[open + 1..].iter().enumerate() {
            match b {
                b']' => return Some((open, open + 1 + offset)),
                b'[' => break,
                _ => {}
            }
        }
    }
    None
}

/// "Is there another cube the same size as the red cube?" is right, but with two objects
/// described by different attribute values ("… another red cube … the blue sphere") the
/// "other" is wrong: when a template describes two objects with all four attribute slots
/// each and some attribute has two different non-empty values, "other" goes and "another"
/// becomes "a", as the official generator does.
fn drop_wrong_other(text: &str, filled: &[(String, String)]) -> String {
    if !text.contains(" other ") && !text.contains(" another ") {
        return text.to_string();
    }
    const PAIRS: [(&str, &str); 4] = [("<Z>", "<Z2>"), ("<C>", "<C2>"), ("<M>", "<M2>"), ("<S>", "<S2>")];
    let mut names: Vec<&str> = filled.iter().map(|(name, _)| name.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let mut expected: Vec<&str> = PAIRS.iter().flat_map(|&(a, b)| [a, b]).collect();
    expected.sort_unstable();
    if names != expected {
        return text.to_string();
    }
    let value = |name: &str| {
        filled
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    let differ = PAIRS.iter().any(|&(a, b)| match (value(a), value(b)) {
        (Some(x), Some(y)) => !x.is_empty() && !y.is_empty() && x != y,
        _ => false,
    });
    if differ {
        text.replace(" other ", " ").replace(" another ", " a ")
    } else {
        text.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn filled(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn slots_take_a_spelling_and_empty_slots_leave_no_double_space() {
        let synonyms: Synonyms = [("cube".to_string(), vec!["cube".to_string(), "block".to_string()])].into();
        let frames = vec!["What color is the <Z> <M> <S>?".to_string()];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..40 {
            let text = realise(
                &frames,
                &filled(&[("<Z>", ""), ("<M>", "metal"), ("<S>", "cube")]),
                &synonyms,
                &mut rng,
            );
            seen.insert(text);
        }
        let seen: Vec<&str> = seen.iter().map(String::as_str).collect();
        assert_eq!(
            seen,
            ["What color is the metal block?", "What color is the metal cube?"]
        );
    }

    #[test]
    fn optional_words_are_kept_about_half_the_time() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let frames = vec!["Are there [any] [other] things?".to_string()];
        let mut kept_any = 0;
        for _ in 0..400 {
            let text = realise(&frames, &[], &Synonyms::new(), &mut rng);
            assert!(!text.contains('[') && !text.contains("  "), "{text}");
            kept_any += usize::from(text.contains(" any "));
        }
        assert!((150..=250).contains(&kept_any), "kept {kept_any} of 400");
        assert_eq!(first_optional("a [b [c] d]"), Some((5, 7)));
        assert_eq!(first_optional("no brackets ] ["), None);
    }

    #[test]
    fn other_goes_when_the_two_descriptions_disagree() {
        let base = [
            ("<Z>", ""),
            ("<M>", ""),
            ("<S>", "thing"),
            ("<Z2>", ""),
            ("<M2>", ""),
            ("<S2>", "thing"),
        ];
        let mut same = filled(&base);
        same.extend(filled(&[("<C>", "red"), ("<C2>", "red")]));
        let mut different = filled(&base);
        different.extend(filled(&[("<C>", "red"), ("<C2>", "blue")]));
        let text = "Is there another red thing of the same size as the other red thing?";
        assert_eq!(drop_wrong_other(text, &same), text);
        assert_eq!(
            drop_wrong_other(text, &different),
            "Is there a red thing of the same size as the red thing?"
        );
        // Not the two-object slot set: left alone.
        assert_eq!(drop_wrong_other(text, &filled(&[("<C>", "red")])), text);
    }
}
