//! The provisional/final contract of partial results.
//!
//! While an utterance is open, the session re-decodes it now and then
//! (see [`crate::realtime`]). A word becomes **stable** once two
//! consecutive provisional decodes agree on it and on every word before it
//! ("local agreement"), and it is not the last word of the newer decode
//! (which may be cut mid-word). Only stable text is sent, as
//! `conversation.item.input_audio_transcription.delta` events: each delta
//! is appended to the ones before, and the deltas of an item, concatenated,
//! are always an exact prefix of its `completed` transcript. The final
//! decode decides every word after the stable prefix; if it disagrees
//! with a stable word (Whisper can revise with more context), the stable
//! words win and the final decode's words after that many words follow,
//! so a client never has to retract text it showed as stable.
//!
//! Words are compared case- and punctuation-insensitively.

/// The stable prefix of one utterance.
#[derive(Debug, Default, Clone)]
pub struct StablePrefix {
    stable: Vec<String>,
    text: String,
    last: Option<Vec<String>>,
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_string).collect()
}

fn norm(w: &str) -> String {
    w.chars()
        .filter(|c| c.is_alphanumeric())
        .flat_map(char::to_lowercase)
        .collect()
}

fn same(a: &str, b: &str) -> bool {
    norm(a) == norm(b)
}

impl StablePrefix {
    /// The stable text so far (the concatenated deltas).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// A provisional decode of the utterance so far; returns the delta that
    /// became stable, if any.
    pub fn provisional(&mut self, decoded: &str) -> Option<String> {
        let now = words(decoded);
        let prev = self.last.replace(now.clone())?;
        // The stable words must still be where they were.
        let n = self.stable.len();
        if now.len() < n || !self.stable.iter().zip(&now).all(|(s, w)| same(s, w)) {
            return None;
        }
        let agreed = prev
            .iter()
            .zip(&now)
            .take_while(|(a, b)| same(a, b))
            .count()
            .min(now.len().saturating_sub(1));
        if agreed <= n {
            return None;
        }
        let new = &now[n..agreed];
        let mut delta = String::new();
        for w in new {
            if !self.text.is_empty() || !delta.is_empty() {
                delta.push(' ');
            }
            delta.push_str(w);
        }
        self.stable.extend(new.iter().cloned());
        self.text.push_str(&delta);
        Some(delta)
    }

    /// The final transcript from the final decode: it starts with the
    /// stable text, always.
    pub fn finish(&self, decoded: &str) -> String {
        let decoded = decoded.trim();
        if self.stable.is_empty() {
            return decoded.to_string();
        }
        let fin = words(decoded);
        let n = self.stable.len();
        // Where the stable prefix ends in the final decode: after its first
        // n words when they agree, else after the occurrence of the last
        // stable word nearest to n (the final may add or drop a word).
        let agrees = fin.len() >= n && self.stable.iter().zip(&fin).all(|(a, b)| same(a, b));
        let k = if agrees {
            n
        } else {
            (1..=fin.len())
                .filter(|&k| same(&fin[k - 1], &self.stable[n - 1]))
                .min_by_key(|&k| k.abs_diff(n))
                .unwrap_or(n.min(fin.len()))
        };
        let rest = &fin[k..];
        let mut out = self.text.clone();
        for w in rest {
            out.push(' ');
            out.push_str(w);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_two_decodes_agree_on_become_stable_except_the_last() {
        let mut s = StablePrefix::default();
        assert_eq!(
            s.provisional("The quick"),
            None,
            "one decode proves nothing"
        );
        assert_eq!(s.provisional("The quick brown"), Some("The quick".into()));
        assert_eq!(s.provisional("the quick brown fox"), Some(" brown".into()));
        assert_eq!(s.text(), "The quick brown");
        assert_eq!(
            s.provisional("The quick brown fox jumps."),
            Some(" fox".into())
        );
        assert_eq!(
            s.finish("The quick brown fox jumps over."),
            "The quick brown fox jumps over."
        );
    }

    #[test]
    fn a_revision_of_stable_words_never_reaches_the_client() {
        let mut s = StablePrefix::default();
        s.provisional("I scream for");
        assert_eq!(
            s.provisional("I scream for you"),
            Some("I scream for".into())
        );
        // A decode that revises the stable words adds nothing…
        assert_eq!(s.provisional("Ice cream for you all"), None);
        // …and the final transcript keeps them.
        let fin = s.finish("Ice cream for you all.");
        assert!(fin.starts_with(s.text()), "{fin}");
        assert_eq!(fin, "I scream for you all.");
    }

    #[test]
    fn the_final_tail_is_aligned_on_the_last_stable_word() {
        let mut s = StablePrefix::default();
        s.provisional("quick brown fox");
        assert_eq!(
            s.provisional("quick brown fox jumps"),
            Some("quick brown fox".into())
        );
        // The final adds a word in front: nothing is lost or repeated.
        assert_eq!(
            s.finish("The quick brown fox jumps over."),
            "quick brown fox jumps over."
        );
        // The final drops a stable word: the stable text stays.
        assert_eq!(s.finish("quick fox jumps."), "quick brown fox jumps.");
    }

    #[test]
    fn without_partials_the_final_is_the_decode() {
        assert_eq!(
            StablePrefix::default().finish("  Hello there. "),
            "Hello there."
        );
    }
}
