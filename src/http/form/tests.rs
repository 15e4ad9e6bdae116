use actix_multipart::test::{create_form_data_payload_and_headers_from_fields, TestFormField};
use actix_web::http::header::HeaderValue;

use super::*;

const LIMITS: FormLimits = FormLimits {
    max_file_bytes: 1024,
    max_body_bytes: 1024 + FORM_OVERHEAD_BYTES,
    timeout: Duration::from_secs(60),
    min_bytes_per_sec: 0,
    spool_threshold: 512,
    spool_dir: None,
};

/// The body as a stream of `chunk`-byte pieces.
fn chunked(body: Bytes, chunk: usize) -> impl Stream<Item = Result<Bytes, PayloadError>> + 'static {
    let pieces: Vec<_> = body
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(pieces)
}

async fn parse(
    fields: Vec<TestFormField<'static>>,
    limits: FormLimits,
) -> Result<TranscriptionForm, ApiError> {
    let (body, headers) = create_form_data_payload_and_headers_from_fields(fields);
    read_form(&headers, chunked(body, 100), limits).await
}

fn file(bytes: &'static [u8]) -> TestFormField<'static> {
    TestFormField::new("file", bytes).filename("speech.WAV")
}

fn text(name: &'static str, value: &'static str) -> TestFormField<'static> {
    TestFormField::new(name, value)
}

#[actix_web::test]
async fn a_full_form_parses() {
    let form = parse(
        vec![
            text("model", "whisper-1"),
            file(b"RIFFxxxx"),
            text("language", "English"),
            text("prompt", " Names: Ada, Grace."),
            text("response_format", "verbose_json"),
            text("temperature", "0.3"),
            text("timestamp_granularities[]", "word"),
            text("timestamp_granularities[]", "segment"),
            text("beam_size", "2"),
            text("batch_size", "16"),
            text("vad_filter", "False"),
            text("stream", "TRUE"),
            text("chunking_strategy", "auto"),
        ],
        LIMITS,
    )
    .await
    .unwrap();
    assert_eq!(form.file.to_vec().unwrap(), b"RIFFxxxx");
    assert!(!form.file.is_spooled());
    assert_eq!(form.file_hint.as_deref(), Some("wav"));
    assert_eq!(form.model.as_deref(), Some("whisper-1"));
    assert_eq!(form.language, Some("en"));
    assert_eq!(form.response_format, ResponseFormat::VerboseJson);
    assert_eq!(
        form.granularities,
        Granularities {
            segment: true,
            word: true
        }
    );
    let o = form.decode_options(5);
    assert_eq!(o.language.as_deref(), Some("en"));
    assert_eq!(o.initial_prompt.as_deref(), Some(" Names: Ada, Grace."));
    assert_eq!(o.temperatures, vec![0.3, 0.5, 0.7, 0.9]);
    assert_eq!(o.beam_size, 2);
    assert_eq!(o.batch_size, 16);
    assert!(o.word_timestamps);
    assert!(!o.vad_filter);
    assert!(form.stream);
}

#[actix_web::test]
async fn subtitles_cannot_be_streamed() {
    for (format, streams) in [
        ("srt", false),
        ("vtt", false),
        ("json", true),
        ("text", true),
        ("verbose_json", true),
    ] {
        let fields = vec![
            file(b"abc"),
            text("response_format", format),
            text("stream", "1"),
        ];
        match parse(fields, LIMITS).await {
            Ok(form) => assert!(streams && form.stream, "{format}"),
            Err(e) => assert_eq!(
                (streams, e.status().as_u16(), e.param()),
                (false, 400, Some("stream")),
                "{format}: {e}"
            ),
        }
    }
}

#[actix_web::test]
async fn defaults_when_only_a_file_is_sent() {
    let form = parse(vec![file(b"abc")], LIMITS).await.unwrap();
    assert_eq!(form.response_format, ResponseFormat::Json);
    assert_eq!(form.granularities, Granularities::default());
    assert!(!form.stream);
    let o = form.decode_options(3);
    assert_eq!(o.beam_size, 3);
    assert_eq!(o.batch_size, 0, "0: the node's --batch-size");
    assert_eq!(o.vad_filter, DEFAULT_VAD_FILTER);
    assert_eq!(o.temperatures, DecodeOptions::default().temperatures);
    assert_eq!(o.language, None);
    assert!(!o.word_timestamps);
}

#[actix_web::test]
async fn content_type_is_the_hint_without_a_file_name() {
    let f = TestFormField::new("file", &b"abc"[..]).content_type("audio/mpeg".parse().unwrap());
    let form = parse(vec![f], LIMITS).await.unwrap();
    assert_eq!(form.file_hint.as_deref(), Some("audio/mpeg"));
}

#[actix_web::test]
async fn missing_file_is_400() {
    let e = parse(vec![text("model", "whisper-1")], LIMITS)
        .await
        .unwrap_err();
    assert_eq!(
        (e.status().as_u16(), e.code(), e.param()),
        (400, "missing_file", Some("file"))
    );
}

#[actix_web::test]
async fn oversized_file_is_413() {
    static BIG: [u8; 1025] = [7u8; 1025];
    let e = parse(vec![file(&BIG)], LIMITS).await.unwrap_err();
    assert_eq!((e.status().as_u16(), e.code()), (413, "upload_too_large"));
    // exactly at the limit is fine
    static EXACT: [u8; 1024] = [7u8; 1024];
    let exact = parse(vec![file(&EXACT)], LIMITS).await.unwrap().file;
    assert_eq!(exact.len(), 1024);
    // Past the spool threshold (512 here) the file is on disk.
    assert!(exact.is_spooled());
    assert_eq!(exact.to_vec().unwrap(), EXACT);
}

#[actix_web::test]
async fn oversized_body_is_413_while_streaming() {
    // Lots of ignored fields: the file is small but the body is not.
    static JUNK: [u8; 4000] = [b'x'; 4000];
    let limits = FormLimits {
        max_file_bytes: 1024,
        max_body_bytes: 2048,
        ..LIMITS
    };
    let fields = vec![file(b"abc"), TestFormField::new("junk", &JUNK[..])];
    let e = parse(fields, limits).await.unwrap_err();
    assert_eq!((e.status().as_u16(), e.code()), (413, "upload_too_large"));
}

#[actix_web::test]
async fn declared_oversize_is_413_before_reading() {
    let (body, mut headers) = create_form_data_payload_and_headers_from_fields(vec![file(b"abc")]);
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(10_000_000u64));
    // A body stream that must never be polled.
    let never = futures::stream::iter(vec![Err::<Bytes, _>(PayloadError::Incomplete(None))]);
    let e = read_form(&headers, never, LIMITS).await.unwrap_err();
    assert_eq!(e.status().as_u16(), 413);
    drop(body);
}

#[actix_web::test]
async fn bad_parameters_are_400_with_param() {
    let cases: Vec<(TestFormField<'static>, &str)> = vec![
        (text("response_format", "xml"), "response_format"),
        (text("temperature", "1.5"), "temperature"),
        (text("temperature", "-0.1"), "temperature"),
        (text("temperature", "NaN"), "temperature"),
        (text("temperature", "warm"), "temperature"),
        (text("language", "klingon"), "language"),
        (text("beam_size", "0"), "beam_size"),
        (text("beam_size", "99"), "beam_size"),
        (text("batch_size", "0"), "batch_size"),
        (text("batch_size", "65"), "batch_size"),
        (text("batch_size", "-1"), "batch_size"),
        (text("batch_size", "eight"), "batch_size"),
        (text("vad_filter", "maybe"), "vad_filter"),
        (
            text("timestamp_granularities[]", "sentence"),
            "timestamp_granularities[]",
        ),
        (
            text("timestamp_granularities[]", "word"),
            "timestamp_granularities[]",
        ), // not verbose_json
        (text("stream", "yes"), "stream"),
    ];
    for (field, param) in cases {
        let e = parse(vec![file(b"abc"), field], LIMITS).await.unwrap_err();
        assert_eq!((e.status().as_u16(), e.param()), (400, Some(param)), "{e}");
    }
}

#[actix_web::test]
async fn empty_text_fields_count_as_absent() {
    let form = parse(
        vec![file(b"abc"), text("language", ""), text("temperature", " ")],
        LIMITS,
    )
    .await
    .unwrap();
    assert_eq!(form.language, None);
    assert_eq!(form.temperature, None);
}

#[actix_web::test]
async fn duplicate_file_and_long_text_are_400() {
    let e = parse(vec![file(b"a"), file(b"b")], LIMITS)
        .await
        .unwrap_err();
    assert_eq!((e.status().as_u16(), e.code()), (400, "duplicate_file"));
    static LONG: [u8; MAX_TEXT_FIELD_BYTES + 1] = [b'a'; MAX_TEXT_FIELD_BYTES + 1];
    let limits = FormLimits::for_upload_limit(1024);
    let e = parse(
        vec![file(b"a"), TestFormField::new("prompt", &LONG[..])],
        limits,
    )
    .await
    .unwrap_err();
    assert_eq!((e.status().as_u16(), e.code()), (400, "field_too_long"));
}

#[actix_web::test]
async fn not_multipart_is_400() {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let body = futures::stream::iter(vec![Ok::<_, PayloadError>(Bytes::from_static(b"{}"))]);
    let e = read_form(&headers, body, LIMITS).await.unwrap_err();
    assert_eq!(
        (e.status().as_u16(), e.code()),
        (400, "invalid_content_type")
    );
}

#[actix_web::test]
async fn truncated_multipart_is_400() {
    let (body, headers) = create_form_data_payload_and_headers_from_fields(vec![file(b"abcdef")]);
    let cut = body.slice(..body.len() - 10);
    let e = read_form(&headers, chunked(cut, 7), LIMITS)
        .await
        .unwrap_err();
    assert_eq!((e.status().as_u16(), e.code()), (400, "invalid_multipart"));
}

#[actix_web::test]
async fn a_stalled_body_is_408_when_its_time_runs_out() {
    let (body, headers) = create_form_data_payload_and_headers_from_fields(vec![file(b"abcdef")]);
    // Half the body, then nothing, ever.
    let half = futures::stream::iter(vec![Ok::<_, PayloadError>(body.slice(..body.len() / 2))])
        .chain(futures::stream::pending());
    let limits = FormLimits {
        timeout: Duration::from_millis(200),
        ..LIMITS
    };
    let started = std::time::Instant::now();
    let e = read_form(&headers, half, limits).await.unwrap_err();
    assert_eq!((e.status().as_u16(), e.code()), (408, "upload_timeout"));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn temperature_schedules() {
    let d = DecodeOptions::default().temperatures;
    assert_eq!(temperature_schedule(None, &d), d);
    assert_eq!(temperature_schedule(Some(0.0), &d), d);
    assert_eq!(
        temperature_schedule(Some(0.2), &d),
        vec![0.2, 0.4, 0.6, 0.8, 1.0]
    );
    assert_eq!(temperature_schedule(Some(0.9), &d), vec![0.9]);
    assert_eq!(temperature_schedule(Some(1.0), &d), vec![1.0]);
}

#[actix_web::test]
async fn openai_and_faster_whisper_extras_parse_and_what_the_node_cannot_do_is_refused() {
    let form = parse(
        vec![
            file(b"RIFFxxxx"),
            text("hotwords", "Ada Lovelace"),
            text("language_detection_segments", "5"),
            text("language_detection_threshold", "0.7"),
            text("vad_filter", "false"),
        ],
        LIMITS,
    )
    .await
    .unwrap();
    let o = form.decode_options(5);
    assert_eq!(o.hotwords.as_deref(), Some("Ada Lovelace"));
    assert_eq!(o.language_detection_segments, 5);
    assert!((o.language_detection_threshold - 0.7).abs() < 1e-6);
    assert!(!o.vad_filter);
    assert!(!o.token_logprobs);
    let o = parse(
        vec![file(b"RIFFxxxx"), text("include[]", "logprobs")],
        LIMITS,
    )
    .await
    .unwrap()
    .decode_options(5);
    assert!(o.token_logprobs);
    let e = parse(
        vec![
            file(b"RIFFxxxx"),
            text("include[]", "logprobs"),
            text("response_format", "verbose_json"),
        ],
        LIMITS,
    )
    .await
    .unwrap_err();
    assert_eq!(e.param(), Some("include[]"), "logprobs only with json");
    let defaults = parse(vec![file(b"RIFFxxxx")], LIMITS)
        .await
        .unwrap()
        .decode_options(5);
    assert_eq!(
        defaults.language_detection_segments,
        DEFAULT_LANGUAGE_DETECTION_SEGMENTS
    );
    assert!(defaults.hotwords.is_none());

    // chunking_strategy turns VAD on unless vad_filter says otherwise.
    for strategy in ["auto", r#"{"type":"server_vad","silence_duration_ms":500}"#] {
        let o = parse(
            vec![file(b"RIFFxxxx"), text("chunking_strategy", strategy)],
            LIMITS,
        )
        .await
        .unwrap()
        .decode_options(5);
        assert!(o.vad_filter, "{strategy}");
    }
    for (name, value, code, param) in [
        (
            "chunking_strategy",
            "none",
            Code::InvalidParameter,
            "chunking_strategy",
        ),
        (
            "known_speaker_names[]",
            "ada",
            Code::UnsupportedParameter,
            "known_speaker_names",
        ),
        (
            "response_format",
            "diarized_json",
            Code::UnsupportedParameter,
            "response_format",
        ),
        (
            "language_detection_segments",
            "81",
            Code::InvalidParameter,
            "language_detection_segments",
        ),
        (
            "language_detection_threshold",
            "2",
            Code::InvalidParameter,
            "language_detection_threshold",
        ),
        ("include[]", "segments", Code::InvalidParameter, "include[]"),
    ] {
        let e = parse(vec![file(b"RIFFxxxx"), text(name, value)], LIMITS)
            .await
            .unwrap_err();
        assert_eq!(
            (e.error_code(), e.param()),
            (code, Some(param)),
            "{name}={value}"
        );
    }
}

#[actix_web::test]
async fn only_text_answers_let_long_audio_decode_without_timestamps() {
    let cases: [(Vec<TestFormField<'static>>, bool); 7] = [
        (vec![file(b"RIFFxxxx")], true),
        (
            vec![file(b"RIFFxxxx"), text("response_format", "text")],
            true,
        ),
        (
            vec![file(b"RIFFxxxx"), text("response_format", "verbose_json")],
            false,
        ),
        (
            vec![file(b"RIFFxxxx"), text("response_format", "srt")],
            false,
        ),
        (
            vec![file(b"RIFFxxxx"), text("response_format", "vtt")],
            false,
        ),
        (
            vec![file(b"RIFFxxxx"), text("include[]", "logprobs")],
            false,
        ),
        (vec![file(b"RIFFxxxx"), text("stream", "true")], false),
    ];
    for (fields, want) in cases {
        let form = parse(fields, LIMITS).await.unwrap();
        assert_eq!(
            form.answers_text_only(),
            want,
            "{:?} stream={}",
            form.response_format,
            form.stream
        );
    }
}
