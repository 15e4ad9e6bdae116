//! Whisper's tokenizer: special-token ids, text decode/encode and the
//! suppressed-token list, as faster-whisper's `Tokenizer` defines them.
//!
//! Two sources are read from the model directory:
//! - the CTranslate2 vocabulary (`vocabulary.txt`, one token per line, or
//!   `vocabulary.json`, an array): ids are 0-based positions. CTranslate2
//!   takes prompts as these token *strings*, so the worker turns ids back
//!   into strings through it.
//! - the Hugging Face `tokenizer.json`, for byte-level BPE decode and encode
//!   (the `tokenizers` crate, the version ct2rs already uses).
//!
//! No special id is hard-coded: `.en` and multilingual vocabularies differ.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};

/// ISO 639-1 (and a few longer) codes Whisper knows, in faster-whisper's order.
pub const LANGUAGE_CODES: &[&str] = &[
    "af", "am", "ar", "as", "az", "ba", "be", "bg", "bn", "bo", "br", "bs", "ca", "cs", "cy", "da",
    "de", "el", "en", "es", "et", "eu", "fa", "fi", "fo", "fr", "gl", "gu", "ha", "haw", "he",
    "hi", "hr", "ht", "hu", "hy", "id", "is", "it", "ja", "jw", "ka", "kk", "km", "kn", "ko", "la",
    "lb", "ln", "lo", "lt", "lv", "mg", "mi", "mk", "ml", "mn", "mr", "ms", "mt", "my", "ne", "nl",
    "nn", "no", "oc", "pa", "pl", "ps", "pt", "ro", "ru", "sa", "sd", "si", "sk", "sl", "sn", "so",
    "sq", "sr", "su", "sv", "sw", "ta", "te", "tg", "th", "tk", "tl", "tr", "tt", "uk", "ur", "uz",
    "vi", "yi", "yo", "zh", "yue",
];

/// The tokenizer of one model.
pub struct WhisperTokenizer {
    hf: tokenizers::Tokenizer,
    vocab: Vec<String>,
    ids: HashMap<String, u32>,
    /// `<|endoftext|>`; every id at or above it is special.
    pub eot: u32,
    /// `<|startoftranscript|>`.
    pub sot: u32,
    /// `<|startofprev|>`.
    pub sot_prev: u32,
    /// `<|notimestamps|>`.
    pub no_timestamps: u32,
    /// `<|0.00|>`, the first timestamp token (`no_timestamps + 1`).
    pub timestamp_begin: u32,
    /// `<|startoflm|>`, if the vocabulary has it.
    pub sot_lm: Option<u32>,
    /// `<|transcribe|>`, if the vocabulary has it.
    pub transcribe: Option<u32>,
    /// `<|translate|>`, if the vocabulary has it.
    pub translate: Option<u32>,
    /// `<|nospeech|>` or `<|nocaptions|>`, if the vocabulary has one.
    pub no_speech: Option<u32>,
}

impl WhisperTokenizer {
    /// Loads the vocabulary and `tokenizer.json` from a model directory.
    pub fn load(model_dir: &Path) -> Result<Self> {
        let vocab = read_vocabulary(model_dir)?;
        let path = model_dir.join("tokenizer.json");
        let hf = tokenizers::Tokenizer::from_file(&path)
            .map_err(|e| anyhow!("cannot read {}: {e}", path.display()))?;
        let tok = Self::new(vocab, hf)?;
        // The two files must describe the same ids.
        for (name, id) in [
            ("<|endoftext|>", tok.eot),
            ("<|startoftranscript|>", tok.sot),
        ] {
            if tok.hf.token_to_id(name) != Some(id) {
                bail!(
                    "tokenizer.json and the vocabulary disagree on the id of {name} ({:?} vs {id})",
                    tok.hf.token_to_id(name)
                );
            }
        }
        Ok(tok)
    }

    /// Builds a tokenizer from a vocabulary (id → token) and a HF tokenizer.
    pub fn new(vocab: Vec<String>, hf: tokenizers::Tokenizer) -> Result<Self> {
        let ids: HashMap<String, u32> = vocab
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let need = |t: &str| {
            ids.get(t)
                .copied()
                .ok_or_else(|| anyhow!("the vocabulary has no {t} token"))
        };
        let no_timestamps = need("<|notimestamps|>")?;
        let tok = Self {
            eot: need("<|endoftext|>")?,
            sot: need("<|startoftranscript|>")?,
            sot_prev: need("<|startofprev|>")?,
            timestamp_begin: no_timestamps + 1,
            no_timestamps,
            sot_lm: ids.get("<|startoflm|>").copied(),
            transcribe: ids.get("<|transcribe|>").copied(),
            translate: ids.get("<|translate|>").copied(),
            no_speech: ids
                .get("<|nospeech|>")
                .or_else(|| ids.get("<|nocaptions|>"))
                .copied(),
            hf,
            vocab,
            ids,
        };
        if tok.timestamp_begin as usize >= tok.vocab.len() {
            bail!("the vocabulary has no timestamp tokens after <|notimestamps|>");
        }
        Ok(tok)
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// The vocabulary string of an id (what CTranslate2 takes in prompts).
    pub fn id_to_token(&self, id: u32) -> Option<&str> {
        self.vocab.get(id as usize).map(String::as_str)
    }

    /// The id of a vocabulary string.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.ids.get(token).copied()
    }

    /// The id of `<|code|>` if `code` is a Whisper language this vocabulary has.
    pub fn language_token(&self, code: &str) -> Option<u32> {
        if !LANGUAGE_CODES.contains(&code) {
            return None;
        }
        self.token_to_id(&format!("<|{code}|>"))
    }

    /// Token ids of `text`, without special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self
            .hf
            .encode(text, false)
            .map_err(|e| anyhow!("cannot encode text: {e}"))?;
        Ok(enc.get_ids().to_vec())
    }

    /// Text of the tokens below `<|endoftext|>` (special tokens dropped).
    pub fn decode(&self, tokens: &[u32]) -> Result<String> {
        let text: Vec<u32> = tokens.iter().copied().filter(|&t| t < self.eot).collect();
        if text.is_empty() {
            return Ok(String::new());
        }
        self.hf
            .decode(&text, true)
            .map_err(|e| anyhow!("cannot decode tokens: {e}"))
    }

    /// The bytes a token stands for: its vocabulary string read through
    /// GPT-2's byte-to-unicode table (`Ġ` is a space); a token outside
    /// that alphabet (a special token) as its UTF-8.
    pub fn token_bytes(&self, id: u32) -> Vec<u8> {
        let Some(token) = self.id_to_token(id) else {
            return Vec::new();
        };
        let table = byte_decoder();
        token
            .chars()
            .map(|c| table.get(&c).copied())
            .collect::<Option<Vec<u8>>>()
            .unwrap_or_else(|| token.as_bytes().to_vec())
    }

    /// faster-whisper's `non_speech_tokens`: symbols and speaker-tag starts
    /// that should never be sampled.
    pub fn non_speech_tokens(&self) -> Result<Vec<u32>> {
        let mut symbols: Vec<String> = "\"#()*+/:;<=>@[\\]^_`{|}~「」『』"
            .chars()
            .map(String::from)
            .collect();
        symbols.extend(
            "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪"
                .split_whitespace()
                .map(String::from),
        );
        let miscellaneous: Vec<String> = "♩♪♫♬♭♮♯".chars().map(String::from).collect();
        let mut result = Vec::new();
        for s in [" -", " '"] {
            if let Some(&first) = self.encode(s)?.first() {
                result.push(first);
            }
        }
        for (symbol, misc) in symbols
            .iter()
            .map(|s| (s, false))
            .chain(miscellaneous.iter().map(|s| (s, true)))
        {
            for text in [symbol.clone(), format!(" {symbol}")] {
                let tokens = self.encode(&text)?;
                if tokens.len() == 1 || (misc && !tokens.is_empty()) {
                    result.push(tokens[0]);
                }
            }
        }
        result.sort_unstable();
        result.dedup();
        Ok(result)
    }

    /// faster-whisper's `get_suppressed_tokens(tokenizer, [-1])`: the
    /// non-speech tokens plus the task, start and no-speech tokens, sorted.
    pub fn suppressed_tokens(&self) -> Result<Vec<i32>> {
        let mut all = self.non_speech_tokens()?;
        all.extend(
            [
                self.transcribe,
                self.translate,
                Some(self.sot),
                Some(self.sot_prev),
                self.sot_lm,
                self.no_speech,
            ]
            .into_iter()
            .flatten(),
        );
        all.sort_unstable();
        all.dedup();
        Ok(all.into_iter().map(|t| t as i32).collect())
    }
}

/// Reads `vocabulary.txt` (one token per line) or `vocabulary.json`.
fn read_vocabulary(model_dir: &Path) -> Result<Vec<String>> {
    let txt = model_dir.join("vocabulary.txt");
    let json = model_dir.join("vocabulary.json");
    if txt.is_file() {
        let text = std::fs::read_to_string(&txt)
            .with_context(|| format!("cannot read {}", txt.display()))?;
        Ok(text.lines().map(String::from).collect())
    } else if json.is_file() {
        let text = std::fs::read_to_string(&json)
            .with_context(|| format!("cannot read {}", json.display()))?;
        serde_json::from_str(&text)
            .with_context(|| format!("{} is not a JSON array of strings", json.display()))
    } else {
        bail!(
            "no vocabulary.txt or vocabulary.json in {}",
            model_dir.display()
        )
    }
}

/// GPT-2's `bytes_to_unicode`, inverted: the character a byte-level BPE
/// vocabulary writes for each byte.
fn byte_decoder() -> &'static std::collections::HashMap<char, u8> {
    static TABLE: std::sync::OnceLock<std::collections::HashMap<char, u8>> =
        std::sync::OnceLock::new();
    TABLE.get_or_init(|| {
        let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let mut next = 256u32;
        (0u8..=255)
            .map(|b| {
                let c = if printable(b) {
                    u32::from(b)
                } else {
                    next += 1;
                    next - 1
                };
                (char::from_u32(c).expect("a valid char"), b)
            })
            .collect()
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn token_bytes_undo_the_byte_level_alphabet() {
        let table = super::byte_decoder();
        assert_eq!(table.len(), 256);
        assert_eq!(table[&'\u{120}'], b' ', "\u{120} is a space");
        assert_eq!(table[&'a'], b'a');
    }

    use super::*;

    /// A tiny vocabulary laid out like Whisper's special-token block.
    pub(crate) fn toy() -> WhisperTokenizer {
        let mut vocab: Vec<String> = ["a", "b", "Ġc"].iter().map(|s| s.to_string()).collect();
        for s in [
            "<|endoftext|>",
            "<|startoftranscript|>",
            "<|en|>",
            "<|translate|>",
            "<|transcribe|>",
            "<|startoflm|>",
            "<|startofprev|>",
            "<|nocaptions|>",
            "<|notimestamps|>",
        ] {
            vocab.push(s.to_string());
        }
        for i in 0..1501 {
            vocab.push(format!("<|{:.2}|>", i as f64 * 0.02));
        }
        let hf = tokenizers::Tokenizer::new(tokenizers::models::bpe::BPE::default());
        WhisperTokenizer::new(vocab, hf).unwrap()
    }

    #[test]
    fn special_ids_come_from_the_vocabulary() {
        let t = toy();
        assert_eq!(
            (t.eot, t.sot, t.sot_prev, t.no_timestamps, t.timestamp_begin),
            (3, 4, 9, 11, 12)
        );
        assert_eq!(t.no_speech, Some(10));
        assert_eq!(t.id_to_token(12), Some("<|0.00|>"));
        assert_eq!(t.language_token("en"), Some(5));
        assert_eq!(t.language_token("de"), None);
        assert_eq!(t.language_token("xx"), None);
    }

    #[test]
    fn a_vocabulary_without_specials_is_refused() {
        let hf = tokenizers::Tokenizer::new(tokenizers::models::bpe::BPE::default());
        assert!(WhisperTokenizer::new(vec!["a".into()], hf).is_err());
    }
}
