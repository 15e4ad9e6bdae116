//! Rendering a [`Transcript`] in the `response_format`s of OpenAI's
//! transcription API: `json`, `text`, `srt`, `vtt` and `verbose_json`.
//!
//! Rendering is pure (no I/O) so every format is unit-tested here.
//!
//! - `json`: `{"text": "..."}` with the text trimmed (and `"logprobs"`, one
//!   entry per token, when they were asked for with `include[]=logprobs`).
//! - `text`: the trimmed text and a newline, `text/plain`.
//! - `srt`: numbered cues, `HH:MM:SS,mmm --> HH:MM:SS,mmm`, one blank line
//!   after each cue; segments whose text is blank are skipped (and not
//!   numbered); no segments gives an empty (valid) document.
//! - `vtt`: a `WEBVTT` header, then cues with `HH:MM:SS.mmm`; `&`, `<`, `>`
//!   are escaped as WebVTT requires.
//! - `verbose_json`: `task`, `language` (lowercase English name, as OpenAI
//!   reports it), `duration`, `text`, `segments` (unless only word
//!   granularity was asked for) and `words` (only when asked for).
//!
//! Cue text never contains a line break or `-->`, so a segment can never
//! break the cue structure.

use std::fmt::Write as _;

use serde::Serialize;

use super::language;
use crate::api::{Task, Transcript};

pub use crate::api::{Granularities, ResponseFormat, UnknownFormat};

/// A rendered body and its content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// `Content-Type` header value.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

/// Renders `transcript` in `format`. `task` is reported by `verbose_json`.
pub fn render(
    transcript: &Transcript,
    format: ResponseFormat,
    granularities: Granularities,
    task: Task,
) -> Rendered {
    match format {
        ResponseFormat::Json => Rendered {
            content_type: "application/json",
            body: json(transcript),
        },
        ResponseFormat::Text => Rendered {
            content_type: "text/plain; charset=utf-8",
            body: format!("{}\n", transcript.result.text.trim()),
        },
        ResponseFormat::Srt => Rendered {
            content_type: "application/x-subrip; charset=utf-8",
            body: srt(transcript),
        },
        ResponseFormat::Vtt => Rendered {
            content_type: "text/vtt; charset=utf-8",
            body: vtt(transcript),
        },
        ResponseFormat::VerboseJson => Rendered {
            content_type: "application/json",
            body: verbose_json(transcript, granularities, task),
        },
    }
}

/// `{"text": …}`, plus OpenAI's `"logprobs": [{"token", "logprob",
/// "bytes"}, …]` (one entry per text token, in order) when the worker gave
/// token log-probabilities (`include[]=logprobs`).
fn json(transcript: &Transcript) -> String {
    let text = transcript.result.text.trim();
    let logprobs: Vec<&crate::api::TokenLogprob> = transcript
        .result
        .segments
        .iter()
        .flat_map(|s| &s.words)
        .flat_map(|w| &w.tokens)
        .collect();
    if logprobs.is_empty() {
        serde_json::json!({ "text": text }).to_string()
    } else {
        serde_json::json!({ "text": text, "logprobs": logprobs }).to_string()
    }
}

/// A cue time: `HH:MM:SS<sep>mmm`, rounded to the millisecond; negative or
/// non-finite times are 0; hours grow past two digits if they must.
pub fn cue_time(secs: f32, sep: char) -> String {
    let ms = if secs.is_finite() && secs > 0.0 {
        (f64::from(secs) * 1000.0).round() as u64
    } else {
        0
    };
    format!(
        "{:02}:{:02}:{:02}{sep}{:03}",
        ms / 3_600_000,
        ms / 60_000 % 60,
        ms / 1000 % 60,
        ms % 1000
    )
}

/// Cues: (start, end, one-line text) for every segment with text.
fn cues(transcript: &Transcript) -> impl Iterator<Item = (f32, f32, String)> + '_ {
    transcript.result.segments.iter().filter_map(|s| {
        let text = s.text.split_whitespace().collect::<Vec<_>>().join(" ");
        if text.is_empty() {
            return None;
        }
        let start = if s.start.is_finite() {
            s.start.max(0.0)
        } else {
            0.0
        };
        let end = if s.end.is_finite() {
            s.end.max(start)
        } else {
            start
        };
        Some((start, end, text))
    })
}

fn srt(transcript: &Transcript) -> String {
    let mut out = String::new();
    for (i, (start, end, text)) in cues(transcript).enumerate() {
        let text = text.replace("-->", "->");
        let _ = write!(
            out,
            "{}\n{} --> {}\n{}\n\n",
            i + 1,
            cue_time(start, ','),
            cue_time(end, ','),
            text
        );
    }
    out
}

fn vtt(transcript: &Transcript) -> String {
    let mut out = String::from("WEBVTT\n\n");
    for (start, end, text) in cues(transcript) {
        let text = text
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        let _ = write!(
            out,
            "{} --> {}\n{}\n\n",
            cue_time(start, '.'),
            cue_time(end, '.'),
            text
        );
    }
    out
}

#[derive(Serialize)]
struct VerboseJson<'a> {
    task: &'static str,
    language: &'a str,
    duration: f32,
    text: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    segments: Option<Vec<VerboseSegment<'a>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    words: Option<Vec<VerboseWord<'a>>>,
}

#[derive(Serialize)]
struct VerboseSegment<'a> {
    id: u32,
    seek: u32,
    start: f32,
    end: f32,
    text: &'a str,
    tokens: &'a [u32],
    temperature: f32,
    avg_logprob: f32,
    compression_ratio: f32,
    no_speech_prob: f32,
}

#[derive(Serialize)]
struct VerboseWord<'a> {
    word: &'a str,
    start: f32,
    end: f32,
}

fn verbose_json(transcript: &Transcript, granularities: Granularities, task: Task) -> String {
    let r = &transcript.result;
    let segments = granularities.segment.then(|| {
        r.segments
            .iter()
            .map(|s| VerboseSegment {
                id: s.id,
                seek: s.seek,
                start: s.start,
                end: s.end,
                text: &s.text,
                tokens: &s.tokens,
                temperature: s.temperature,
                avg_logprob: s.avg_logprob,
                compression_ratio: s.compression_ratio,
                no_speech_prob: s.no_speech_prob,
            })
            .collect()
    });
    let words = granularities.word.then(|| {
        r.segments
            .iter()
            .flat_map(|s| s.words.iter())
            .map(|w| VerboseWord {
                word: w.word.trim(),
                start: w.start,
                end: w.end,
            })
            .collect()
    });
    let body = VerboseJson {
        task: match task {
            Task::Transcribe => "transcribe",
            Task::Translate => "translate",
        },
        language: language::name(&r.language).unwrap_or(r.language.as_str()),
        duration: r.duration_secs,
        text: r.text.trim(),
        segments,
        words,
    };
    serde_json::to_string(&body).unwrap_or_else(|e| {
        // Serialising plain structs of numbers and strings cannot fail.
        tracing::error!(error = %e, "verbose_json rendering failed");
        String::from("{}")
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::api::{JobResult, Segment, Word};

    fn segment(id: u32, start: f32, end: f32, text: &str, words: Vec<Word>) -> Segment {
        Segment {
            id,
            seek: 0,
            start,
            end,
            text: text.into(),
            tokens: vec![50364, 1044, 50464],
            temperature: 0.0,
            avg_logprob: -0.25,
            compression_ratio: 1.5,
            no_speech_prob: 0.01,
            words,
        }
    }

    fn transcript(segments: Vec<Segment>) -> Transcript {
        let text = segments.iter().map(|s| s.text.as_str()).collect::<String>();
        Transcript {
            job_id: 42,
            result: JobResult {
                job_id: 42,
                text,
                segments,
                language: "en".into(),
                language_probability: 1.0,
                duration_secs: 3730.0,
                timings: Default::default(),
            },
            queue_wait: Duration::from_millis(5),
            decode_time: Duration::from_millis(900),
            worker_generation: 0,
        }
    }

    fn word(w: &str, start: f32, end: f32) -> Word {
        Word {
            start,
            end,
            word: w.into(),
            probability: 0.9,
            tokens: Vec::new(),
        }
    }

    fn sample() -> Transcript {
        transcript(vec![
            segment(
                0,
                0.0,
                61.5,
                " Hello world.",
                vec![word(" Hello", 0.0, 0.5), word(" world.", 0.5, 61.5)],
            ),
            segment(1, 61.5, 3725.25, " Second\nline --> here ", vec![]),
            segment(2, 3725.25, 3726.0, "   ", vec![]),
        ])
    }

    fn render_str(t: &Transcript, f: ResponseFormat) -> String {
        render(t, f, Granularities::default(), Task::Transcribe).body
    }

    #[test]
    fn cue_times() {
        assert_eq!(cue_time(0.0, ','), "00:00:00,000");
        assert_eq!(cue_time(61.5, ','), "00:01:01,500");
        assert_eq!(cue_time(3725.25, ','), "01:02:05,250");
        assert_eq!(cue_time(3725.25, '.'), "01:02:05.250");
        assert_eq!(cue_time(-3.0, ','), "00:00:00,000");
        assert_eq!(cue_time(f32::NAN, ','), "00:00:00,000");
        assert_eq!(cue_time(0.0005, '.'), "00:00:00.001");
        assert_eq!(cue_time(360_000.0, '.'), "100:00:00.000");
    }

    #[test]
    fn srt_is_numbered_and_well_formed() {
        let srt = render_str(&sample(), ResponseFormat::Srt);
        assert_eq!(
            srt,
            "1\n00:00:00,000 --> 00:01:01,500\nHello world.\n\n\
             2\n00:01:01,500 --> 01:02:05,250\nSecond line -> here\n\n"
        );
    }

    #[test]
    fn vtt_has_header_and_dot_millis() {
        let mut t = sample();
        t.result.segments[0].text = " a < b & c ".into();
        let vtt = render_str(&t, ResponseFormat::Vtt);
        assert_eq!(
            vtt,
            "WEBVTT\n\n\
             00:00:00.000 --> 00:01:01.500\na &lt; b &amp; c\n\n\
             00:01:01.500 --> 01:02:05.250\nSecond line --&gt; here\n\n"
        );
    }

    #[test]
    fn empty_transcript_yields_valid_empty_documents() {
        let t = transcript(vec![]);
        assert_eq!(render_str(&t, ResponseFormat::Srt), "");
        assert_eq!(render_str(&t, ResponseFormat::Vtt), "WEBVTT\n\n");
        assert_eq!(render_str(&t, ResponseFormat::Text), "\n");
        assert_eq!(render_str(&t, ResponseFormat::Json), r#"{"text":""}"#);
        let v: serde_json::Value =
            serde_json::from_str(&render_str(&t, ResponseFormat::VerboseJson)).unwrap();
        assert_eq!(v["segments"], serde_json::json!([]));
        assert_eq!(v["text"], "");
    }

    #[test]
    fn json_and_text_are_trimmed() {
        let t = sample();
        let json: serde_json::Value =
            serde_json::from_str(&render_str(&t, ResponseFormat::Json)).unwrap();
        assert_eq!(json, serde_json::json!({"text": t.result.text.trim()}));
        let r = render(
            &t,
            ResponseFormat::Text,
            Granularities::default(),
            Task::Transcribe,
        );
        assert_eq!(r.content_type, "text/plain; charset=utf-8");
        assert!(r.body.starts_with("Hello world."));
        assert!(r.body.ends_with("here\n"));
    }

    #[test]
    fn verbose_json_is_openai_shaped() {
        let v: serde_json::Value =
            serde_json::from_str(&render_str(&sample(), ResponseFormat::VerboseJson)).unwrap();
        assert_eq!(v["task"], "transcribe");
        assert_eq!(v["language"], "english");
        assert_eq!(v["duration"], 3730.0);
        assert_eq!(v["segments"].as_array().unwrap().len(), 3);
        let s = &v["segments"][1];
        for key in [
            "id",
            "seek",
            "start",
            "end",
            "text",
            "tokens",
            "temperature",
            "avg_logprob",
            "compression_ratio",
            "no_speech_prob",
        ] {
            assert!(s.get(key).is_some(), "segment lacks {key}");
        }
        assert_eq!(s["start"], 61.5);
        assert_eq!(s["avg_logprob"], -0.25);
        assert!(v.get("words").is_none(), "words only when asked for");
    }

    #[test]
    fn verbose_json_words_when_asked() {
        let both = Granularities {
            segment: true,
            word: true,
        };
        let v: serde_json::Value = serde_json::from_str(
            &render(
                &sample(),
                ResponseFormat::VerboseJson,
                both,
                Task::Transcribe,
            )
            .body,
        )
        .unwrap();
        assert_eq!(
            v["words"],
            serde_json::json!([{"word": "Hello", "start": 0.0, "end": 0.5}, {"word": "world.", "start": 0.5, "end": 61.5}])
        );
        let words_only = Granularities {
            segment: false,
            word: true,
        };
        let v: serde_json::Value = serde_json::from_str(
            &render(
                &sample(),
                ResponseFormat::VerboseJson,
                words_only,
                Task::Transcribe,
            )
            .body,
        )
        .unwrap();
        assert!(v.get("segments").is_none());
        assert_eq!(v["words"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn unknown_language_codes_are_passed_through() {
        let mut t = sample();
        t.result.language = "xx".into();
        let v: serde_json::Value =
            serde_json::from_str(&render_str(&t, ResponseFormat::VerboseJson)).unwrap();
        assert_eq!(v["language"], "xx");
    }

    #[test]
    fn formats_parse() {
        assert_eq!("json".parse(), Ok(ResponseFormat::Json));
        assert_eq!("VERBOSE_JSON".parse(), Ok(ResponseFormat::VerboseJson));
        assert_eq!(" srt ".parse(), Ok(ResponseFormat::Srt));
        assert!("xml".parse::<ResponseFormat>().is_err());
        for f in [
            ResponseFormat::Json,
            ResponseFormat::Text,
            ResponseFormat::Srt,
            ResponseFormat::Vtt,
            ResponseFormat::VerboseJson,
        ] {
            assert_eq!(f.as_str().parse(), Ok(f));
        }
    }
}
