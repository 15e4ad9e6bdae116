use super::*;
use proptest::prelude::*;
use std::io;

fn header(id: u64, sample_count: u64) -> JobHeader {
    JobHeader {
        id,
        traceparent: Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()),
        sample_count,
        options: DecodeOptions::default(),
        fault: None,
        stream_segments: true,
    }
}

/// Reads every frame of `wire` back as `ToWorker` messages.
fn read_all(wire: Vec<u8>) -> Vec<ToWorker> {
    let mut r = io::Cursor::new(wire);
    let mut out = vec![];
    while let Some(p) = read_frame(&mut r).unwrap() {
        out.push(decode(&p).unwrap());
    }
    out
}

/// Feeds messages to an assembler; returns the finished jobs.
fn assemble(msgs: Vec<ToWorker>) -> Result<Vec<Job>, AssemblyError> {
    let mut a = JobAssembler::default();
    let mut jobs = vec![];
    for m in msgs {
        let done = match m {
            ToWorker::Job(h) => a.header(h)?,
            ToWorker::AudioChunk(c) => a.chunk(c)?,
            _ => {
                a.expect_idle()?;
                None
            }
        };
        jobs.extend(done);
    }
    a.expect_idle()?;
    Ok(jobs)
}

#[test]
fn frames_round_trip_through_a_byte_stream() {
    let mut wire = Vec::new();
    write_frame(&mut wire, &ToWorker::Job(header(7, 0))).unwrap();
    write_frame(&mut wire, &ToWorker::Cancel { job_id: 7 }).unwrap();
    write_frame(&mut wire, &ToWorker::Shutdown).unwrap();
    let msgs = read_all(wire);
    assert_eq!(
        msgs,
        vec![
            ToWorker::Job(header(7, 0)),
            ToWorker::Cancel { job_id: 7 },
            ToWorker::Shutdown
        ]
    );
}

#[test]
fn a_job_travels_as_a_header_and_bounded_chunks_and_comes_back_whole() {
    // Two and a half chunks, with the extremes of i16 in them.
    let n = CHUNK_SAMPLES * 2 + CHUNK_SAMPLES / 2;
    let samples: Vec<i16> = (0..n)
        .map(|i| match i % 5 {
            0 => i16::MIN,
            1 => i16::MAX,
            _ => (i as i16).wrapping_mul(31),
        })
        .collect();
    let mut wire = Vec::new();
    write_job(&mut wire, &header(9, 0), &samples).unwrap();
    let msgs = read_all(wire.clone());
    assert_eq!(msgs.len(), 4, "a header and three chunks");
    match &msgs[0] {
        ToWorker::Job(h) => assert_eq!(h.sample_count, n as u64),
        other => panic!("expected the header first, got {other:?}"),
    }
    for m in &msgs[1..] {
        match m {
            ToWorker::AudioChunk(c) => {
                assert_eq!(c.job_id, 9);
                assert!(c.pcm.0.len() <= CHUNK_SAMPLES);
            }
            other => panic!("expected a chunk, got {other:?}"),
        }
    }
    // No frame is larger than a chunk's PCM plus a few bytes.
    let mut r = io::Cursor::new(wire);
    while let Some(p) = read_frame(&mut r).unwrap() {
        assert!(
            p.len() <= CHUNK_SAMPLES * 2 + 32,
            "frame of {} bytes",
            p.len()
        );
    }
    let jobs = assemble(msgs).unwrap();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].id, 9);
    assert_eq!(jobs[0].samples, samples);
    assert_eq!(jobs[0].options, DecodeOptions::default());
    assert!(jobs[0].stream_segments);
}

#[test]
fn three_hours_of_audio_fit_the_protocol_in_bounded_frames() {
    // The case of issue 18: 3 h of 16 kHz audio was one 691 MB frame.
    let samples = 3 * 3600 * SAMPLE_RATE as u64;
    assert!(encode_job_header(&header(1, samples)).is_ok());
    const { assert!(3 * 3600 * (SAMPLE_RATE as u64) <= MAX_JOB_SAMPLES) };
    const { assert!(CHUNK_SAMPLES * 2 + 16 < MAX_FRAME_LEN) };
}

#[test]
fn a_header_over_the_limit_is_refused_on_both_sides() {
    let h = header(3, MAX_JOB_SAMPLES + 1);
    assert!(matches!(
        encode_job_header(&h),
        Err(FrameError::TooManySamples(n)) if n == MAX_JOB_SAMPLES + 1
    ));
    // A receiver refuses it without reserving memory for it.
    assert_eq!(
        JobAssembler::default().header(h),
        Err(AssemblyError::TooManySamples {
            job_id: 3,
            samples: MAX_JOB_SAMPLES + 1
        })
    );
}

#[test]
fn an_empty_job_is_complete_at_its_header() {
    let mut a = JobAssembler::default();
    let job = a.header(header(4, 0)).unwrap().expect("complete");
    assert!(job.samples.is_empty());
    assert_eq!(a.receiving(), None);
}

#[test]
fn chunks_that_do_not_fit_their_job_are_refused() {
    let chunk = |job_id, n: usize| {
        ToWorker::AudioChunk(AudioChunk {
            job_id,
            pcm: Pcm(vec![1; n]),
        })
    };
    // A chunk without a header.
    assert_eq!(
        assemble(vec![chunk(1, 4)]),
        Err(AssemblyError::Unexpected { job_id: 1 })
    );
    // A chunk of another job.
    assert_eq!(
        assemble(vec![ToWorker::Job(header(1, 8)), chunk(2, 4)]),
        Err(AssemblyError::WrongJob {
            expected: 1,
            got: 2
        })
    );
    // More than announced.
    assert_eq!(
        assemble(vec![ToWorker::Job(header(1, 8)), chunk(1, 4), chunk(1, 5)]),
        Err(AssemblyError::TooLong {
            job_id: 1,
            got: 9,
            expected: 8
        })
    );
    // Another job, a cancel or the end before the audio is complete.
    let cut = Err(AssemblyError::Incomplete {
        job_id: 1,
        got: 4,
        expected: 8,
    });
    assert_eq!(
        assemble(vec![
            ToWorker::Job(header(1, 8)),
            chunk(1, 4),
            ToWorker::Job(header(2, 0))
        ]),
        cut
    );
    assert_eq!(
        assemble(vec![
            ToWorker::Job(header(1, 8)),
            chunk(1, 4),
            ToWorker::Cancel { job_id: 1 }
        ]),
        cut
    );
    assert_eq!(
        assemble(vec![ToWorker::Job(header(1, 8)), chunk(1, 4)]),
        cut
    );
    // And the happy path: two jobs back to back.
    let jobs = assemble(vec![
        ToWorker::Job(header(1, 8)),
        chunk(1, 4),
        chunk(1, 4),
        ToWorker::Job(header(2, 1)),
        chunk(2, 1),
    ])
    .unwrap();
    assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![1, 2]);
}

#[test]
fn an_odd_number_of_pcm_bytes_is_malformed() {
    // Hand-made chunk: variant 1, job id 5, 3 bytes of "PCM".
    let payload = [1u8, 5, 3, 0, 0, 0];
    assert!(matches!(
        decode::<ToWorker>(&payload),
        Err(FrameError::Malformed(_))
    ));
    let payload = [1u8, 5, 4, 1, 0, 0xff, 0xff];
    assert_eq!(
        decode::<ToWorker>(&payload).unwrap(),
        ToWorker::AudioChunk(AudioChunk {
            job_id: 5,
            pcm: Pcm(vec![1, -1])
        })
    );
}

#[test]
fn eof_inside_a_frame_is_an_error() {
    let mut wire = Vec::new();
    write_frame(&mut wire, &ToWorker::Job(header(7, 0))).unwrap();
    wire.truncate(wire.len() - 3);
    assert!(read_frame(&mut io::Cursor::new(wire)).is_err());
    // and inside the length prefix
    assert!(read_frame(&mut io::Cursor::new(vec![0u8, 0])).is_err());
}

#[test]
fn oversized_length_is_refused_without_allocating() {
    let wire = u32::MAX.to_be_bytes().to_vec();
    match read_frame(&mut io::Cursor::new(wire)) {
        Err(FrameError::TooLong(n)) => assert_eq!(n, u32::MAX as usize),
        other => panic!("expected TooLong, got {other:?}"),
    }
}

#[test]
fn blocking_and_async_framing_agree() {
    use bytes::BytesMut;
    use tokio_util::codec::Decoder;
    let mut wire = Vec::new();
    write_job(&mut wire, &header(7, 0), &[1, 2, 3]).unwrap();
    let mut buf = BytesMut::from(&wire[..]);
    let mut codec = codec();
    let h = codec.decode(&mut buf).unwrap().unwrap();
    let c = codec.decode(&mut buf).unwrap().unwrap();
    assert_eq!(decode::<ToWorker>(&h).unwrap(), ToWorker::Job(header(7, 3)));
    assert_eq!(
        decode::<ToWorker>(&c).unwrap(),
        ToWorker::AudioChunk(AudioChunk {
            job_id: 7,
            pcm: Pcm(vec![1, 2, 3])
        })
    );
}

#[test]
fn borrowed_frames_are_byte_identical_to_the_owned_ones() {
    let h = header(7, 3);
    assert_eq!(
        encode(&ToWorker::Job(h.clone())).unwrap(),
        encode_job_header(&h).unwrap()
    );
    let pcm = vec![0i16, 1, -1, i16::MAX, i16::MIN];
    let owned = encode(&ToWorker::AudioChunk(AudioChunk {
        job_id: 7,
        pcm: Pcm(pcm.clone()),
    }))
    .unwrap();
    let borrowed: Vec<_> = encode_audio_chunks(7, &pcm).collect();
    assert_eq!(borrowed.len(), 1);
    assert_eq!(&owned, borrowed[0].as_ref().unwrap());
}

#[test]
fn heartbeats_round_trip() {
    for running in [None, Some(42)] {
        let m = FromWorker::Heartbeat { running };
        assert_eq!(decode::<FromWorker>(&encode(&m).unwrap()).unwrap(), m);
    }
}

proptest! {
    #[test]
    fn decoding_arbitrary_bytes_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode::<ToWorker>(&bytes);
        let _ = decode::<FromWorker>(&bytes);
        let _ = read_frame(&mut io::Cursor::new(&bytes));
    }

    #[test]
    fn mutated_valid_frames_never_panic(flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8)) {
        let mut payload = encode(&ToWorker::Job(header(7, 100))).unwrap();
        for (i, b) in flips {
            let i = i.index(payload.len());
            payload[i] ^= b;
        }
        let _ = decode::<ToWorker>(&payload);
    }

    #[test]
    fn any_pcm_round_trips_through_chunks(pcm in proptest::collection::vec(any::<i16>(), 0..2048)) {
        let mut wire = Vec::new();
        write_job(&mut wire, &header(11, 0), &pcm).unwrap();
        let jobs = assemble(read_all(wire)).unwrap();
        prop_assert_eq!(jobs.len(), 1);
        prop_assert_eq!(&jobs[0].samples, &pcm);
    }

    #[test]
    fn results_round_trip(text in ".{0,64}", start in 0f32..100.0, n in 0u32..5) {
        let r = FromWorker::Done(JobResult {
            job_id: 1,
            text: text.clone(),
            segments: (0..n).map(|i| Segment {
                id: i, seek: 0, start, end: start + 1.0, text: text.clone(), tokens: vec![1, 2],
                temperature: 0.0, avg_logprob: -0.1, compression_ratio: 1.2, no_speech_prob: 0.01,
                words: vec![],
            }).collect(),
            language: "en".into(),
            language_probability: 1.0,
            duration_secs: 3.0,
            timings: Timings::default(),
        });
        let bytes = encode(&r).unwrap();
        prop_assert_eq!(decode::<FromWorker>(&bytes).unwrap(), r);
    }
}

/// Feeds messages to a batch assembler; returns what they completed.
fn assemble_batches(msgs: Vec<ToWorker>) -> Result<Vec<Assembled>, AssemblyError> {
    let mut a = BatchAssembler::default();
    let mut out = vec![];
    for m in msgs {
        let done = match m {
            ToWorker::Batch { job_ids } => {
                a.batch(job_ids)?;
                None
            }
            ToWorker::Job(h) => a.header(h)?,
            ToWorker::AudioChunk(c) => a.chunk(c)?,
            _ => {
                a.expect_idle()?;
                None
            }
        };
        out.extend(done);
    }
    a.expect_idle()?;
    Ok(out)
}

/// A job's frames: its header and one chunk of `n` samples.
fn job_frames(id: u64, n: usize) -> Vec<ToWorker> {
    let pcm = Pcm(vec![id as i16; n]);
    vec![
        ToWorker::Job(header(id, n as u64)),
        ToWorker::AudioChunk(AudioChunk { job_id: id, pcm }),
    ]
}

#[test]
fn a_batch_comes_back_whole_in_order_and_a_lone_job_as_before() {
    let mut msgs = vec![ToWorker::Batch {
        job_ids: vec![3, 1, 2],
    }];
    for id in [3, 1, 2] {
        msgs.extend(job_frames(id, 5));
    }
    msgs.extend(job_frames(9, 2));
    let mut wire = Vec::new();
    for m in &msgs {
        write_frame(&mut wire, m).unwrap();
    }
    let got = assemble_batches(read_all(wire)).unwrap();
    assert_eq!(got.len(), 2);
    match &got[0] {
        Assembled::Batch(jobs) => {
            let ids: Vec<u64> = jobs.iter().map(|j| j.id).collect();
            assert_eq!(ids, vec![3, 1, 2]);
            assert!(jobs.iter().all(|j| j.samples == vec![j.id as i16; 5]));
        }
        other => panic!("expected a batch, got {other:?}"),
    }
    assert!(matches!(&got[1], Assembled::Job(j) if j.id == 9 && j.samples.len() == 2));
}

#[test]
fn batches_that_do_not_fit_their_frames_are_refused() {
    let batch = |ids: Vec<u64>| ToWorker::Batch { job_ids: ids };
    // Too small, or a job named twice.
    assert!(matches!(
        assemble_batches(vec![batch(vec![1])]),
        Err(AssemblyError::BadBatch { .. })
    ));
    assert!(matches!(
        assemble_batches(vec![batch(vec![1, 1])]),
        Err(AssemblyError::BadBatch { .. })
    ));
    // A job the batch does not name next.
    let mut msgs = vec![batch(vec![1, 2])];
    msgs.extend(job_frames(2, 3));
    assert_eq!(
        assemble_batches(msgs),
        Err(AssemblyError::NotInBatch {
            expected: 1,
            got: 2
        })
    );
    // A cancel inside a batch, a batch inside a batch, EOF inside a batch.
    let mut msgs = vec![batch(vec![1, 2])];
    msgs.extend(job_frames(1, 3));
    msgs.push(ToWorker::Cancel { job_id: 1 });
    assert!(matches!(
        assemble_batches(msgs),
        Err(AssemblyError::BadBatch { .. })
    ));
    let mut msgs = vec![batch(vec![1, 2])];
    msgs.extend(job_frames(1, 3));
    msgs.push(batch(vec![3, 4]));
    assert!(matches!(
        assemble_batches(msgs),
        Err(AssemblyError::BadBatch { .. })
    ));
    let mut msgs = vec![batch(vec![1, 2])];
    msgs.extend(job_frames(1, 3));
    assert!(matches!(
        assemble_batches(msgs),
        Err(AssemblyError::BadBatch { .. })
    ));
}
