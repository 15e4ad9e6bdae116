//! The child's I/O: four tasks, none of them in an actor's `handle`.
//!
//! - A writer that sends [`Outgoing`] messages to the child's stdin as
//!   `asr_ipc` frames through [`asr_ipc::codec`]: a job is its header frame,
//!   then its audio as 16-bit PCM chunk frames
//!   ([`asr_ipc::encode_audio_chunks`]), each encoded just before it is
//!   written, so hours of audio cost neither a second copy nor a giant
//!   frame. If a write fails it stops and drops stdin, which makes the child
//!   exit on EOF.
//! - A reader that turns stdout frames (the same codec) into
//!   [`ChildEvent::Frame`], or one [`ChildEvent::ProtocolError`] for
//!   anything that is not a valid frame, after which it stops reading.
//! - A stderr forwarder that logs the child's lines with its generation.
//! - An exit watcher that waits on the child and reports
//!   [`ChildEvent::Exited`] the moment it dies (no polling), after setting
//!   the [`super::ChildGuard`]'s reaped flag.
//!
//! Both directions go through the one codec of `asr_ipc`, so the two ends
//! cannot disagree about framing.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use asr_ipc::{FromWorker, ToWorker};
use bytes::Bytes;
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Child;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, FramedWrite};

use super::ProcessExit;

/// Longest the exit watcher waits for the reader to pass on the dead
/// child's last frames before it reports the exit.
const READER_DRAIN: std::time::Duration = std::time::Duration::from_millis(500);

/// What the writer task sends to the child.
pub enum Outgoing {
    /// A job: its header, then its audio.
    Job {
        /// The job's id.
        id: u64,
        /// The encoded [`asr_ipc::JobHeader`] frame payload (encoded by the
        /// caller first, so a job that cannot be sent is refused before
        /// anything of it is written).
        header: Vec<u8>,
        /// Its 16 kHz mono PCM, sent in chunks after the header.
        audio: Arc<dyn AsRef<[i16]> + Send + Sync>,
    },
    /// [`ToWorker::Cancel`] for this job.
    Cancel(u64),
    /// [`ToWorker::Batch`]: the next jobs sent (these ids, in order) form
    /// one batch.
    Batch(Vec<u64>),
}

impl std::fmt::Debug for Outgoing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outgoing::Job { id, audio, .. } => f
                .debug_struct("Job")
                .field("id", id)
                .field("samples", &(**audio).as_ref().len())
                .finish(),
            Outgoing::Cancel(id) => f.debug_tuple("Cancel").field(id).finish(),
            Outgoing::Batch(ids) => f.debug_tuple("Batch").field(ids).finish(),
        }
    }
}

/// What the child's I/O tasks report.
#[derive(Debug)]
pub enum ChildEvent {
    /// A frame from the child's stdout.
    Frame(FromWorker),
    /// The child's stdout carried something that is not a valid frame (the
    /// reader stops after this).
    ProtocolError(String),
    /// The child ended (it has been reaped).
    Exited(ProcessExit),
}

/// The running I/O of one child.
pub struct ChildIo {
    /// Where to send frames to the child; dropping it closes the child's
    /// stdin (once queued frames are written), which asks it to exit.
    pub input: mpsc::UnboundedSender<Outgoing>,
    /// The four tasks; aborted by whoever owns them when it stops.
    pub tasks: Vec<JoinHandle<()>>,
}

/// Starts the four I/O tasks of `child` (spawned with piped stdio).
/// `events` receives what they report and returns `false` once nobody
/// listens (the reader then stops). `reaped` is set once the child has
/// been waited for ([`super::ChildGuard::reaped_flag`]).
pub fn start(
    mut child: Child,
    reaped: Arc<AtomicBool>,
    generation: u64,
    pid: u32,
    events: impl Fn(ChildEvent) -> bool + Send + Sync + Clone + 'static,
) -> Result<ChildIo, &'static str> {
    let stdin = child.stdin.take().ok_or("child has no stdin")?;
    let stdout = child.stdout.take().ok_or("child has no stdout")?;
    let stderr = child.stderr.take().ok_or("child has no stderr")?;
    let mut tasks = Vec::with_capacity(4);

    // Writer: encoding happens here, off the actor.
    let (input, mut rx) = mpsc::unbounded_channel::<Outgoing>();
    tasks.push(tokio::spawn(async move {
        let mut frames = FramedWrite::new(stdin, asr_ipc::codec());
        while let Some(out) = rx.recv().await {
            let (id, res) = match out {
                Outgoing::Job { id, header, audio } => {
                    (id, write_job(&mut frames, id, header, (*audio).as_ref()).await)
                }
                Outgoing::Cancel(id) => (id, send(&mut frames, &ToWorker::Cancel { job_id: id }).await),
                Outgoing::Batch(job_ids) => {
                    let id = job_ids.first().copied().unwrap_or_default();
                    (id, send(&mut frames, &ToWorker::Batch { job_ids }).await)
                }
            };
            if let Err(e) = res {
                // The child is gone (its exit watcher reports it), or a
                // chunk could not be encoded after its header went out,
                // which leaves the child waiting for audio that cannot
                // come: either way the child must go (closing its stdin
                // makes it exit), and its exit answers or requeues the jobs.
                tracing::warn!(job_id = id, error = %e, "sending to the worker failed, closing its input");
                break;
            }
        }
        // Dropping stdin here makes the child exit on EOF.
    }));

    // Reader: frames → events. It says when it is done, so that the exit
    // watcher reports the exit only after the child's last frames (a
    // `LoadFailed` written just before it exits must not lose the race).
    let sink = events.clone();
    let (reader_done, reader_finished) = tokio::sync::oneshot::channel::<()>();
    tasks.push(tokio::spawn(async move {
        let _done = reader_done;
        let mut frames = FramedRead::new(stdout, asr_ipc::codec());
        while let Some(frame) = frames.next().await {
            let event = match frame {
                Ok(bytes) => match asr_ipc::decode::<FromWorker>(&bytes) {
                    Ok(m) => ChildEvent::Frame(m),
                    Err(e) => ChildEvent::ProtocolError(e.to_string()),
                },
                Err(e) => ChildEvent::ProtocolError(e.to_string()),
            };
            let stop = matches!(event, ChildEvent::ProtocolError(_));
            if !sink(event) || stop {
                break;
            }
        }
    }));

    // Stderr: forwarded into our log with the generation.
    tasks.push(tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            tracing::info!(target: "worker_proc", generation, pid, "{line}");
        }
    }));

    // Exit watcher: instant detection through wait().
    tasks.push(tokio::spawn(async move {
        let exit = match child.wait().await {
            Ok(status) => ProcessExit::from(&status),
            Err(e) => ProcessExit::WaitFailed(e.to_string()),
        };
        reaped.store(true, Ordering::Release);
        // The child's stdout is at EOF now unless something else holds it:
        // wait (bounded) for its last frames to be passed on first.
        let _ = tokio::time::timeout(READER_DRAIN, reader_finished).await;
        let _ = events(ChildEvent::Exited(exit));
    }));

    Ok(ChildIo { input, tasks })
}

/// Encodes and writes one frame.
async fn send<W: tokio::io::AsyncWrite + Unpin>(
    frames: &mut FramedWrite<W, tokio_util::codec::LengthDelimitedCodec>,
    msg: &ToWorker,
) -> Result<(), String> {
    let frame = asr_ipc::encode(msg).map_err(|e| e.to_string())?;
    frames
        .send(Bytes::from(frame))
        .await
        .map_err(|e| e.to_string())
}

/// Writes a job through the codec: its encoded header, then its audio chunk
/// by chunk (each encoded just before it is written, so at most one chunk's
/// copy exists).
async fn write_job<W: tokio::io::AsyncWrite + Unpin>(
    frames: &mut FramedWrite<W, tokio_util::codec::LengthDelimitedCodec>,
    id: u64,
    header: Vec<u8>,
    samples: &[i16],
) -> Result<(), String> {
    frames
        .send(Bytes::from(header))
        .await
        .map_err(|e| e.to_string())?;
    for chunk in asr_ipc::encode_audio_chunks(id, samples) {
        let chunk = chunk.map_err(|e| e.to_string())?;
        frames
            .send(Bytes::from(chunk))
            .await
            .map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The writer's frames are what the child's blocking reader expects:
    /// a job put back together by a `JobAssembler`, then a cancel.
    #[tokio::test]
    async fn the_writer_speaks_the_codec_the_child_reads() {
        let (client, mut server) = tokio::io::duplex(1 << 16);
        let samples: Vec<i16> = (0..(asr_ipc::CHUNK_SAMPLES as i32 + 1000))
            .map(|i| i as i16)
            .collect();
        let header = asr_ipc::JobHeader {
            id: 7,
            traceparent: None,
            sample_count: samples.len() as u64,
            options: Default::default(),
            fault: None,
            stream_segments: false,
        };
        let encoded = asr_ipc::encode_job_header(&header).unwrap();
        let expected = samples.clone();
        let writer = tokio::spawn(async move {
            let mut frames = FramedWrite::new(client, asr_ipc::codec());
            write_job(&mut frames, 7, encoded, &samples).await.unwrap();
            let cancel = asr_ipc::encode(&ToWorker::Cancel { job_id: 7 }).unwrap();
            frames.send(Bytes::from(cancel)).await.unwrap();
        });
        let mut bytes = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut server, &mut bytes)
            .await
            .unwrap();
        writer.await.unwrap();
        let mut r = std::io::Cursor::new(bytes);
        let mut asm = asr_ipc::JobAssembler::default();
        let mut job = None;
        while job.is_none() {
            let frame = asr_ipc::read_frame(&mut r).unwrap().expect("a frame");
            job = match asr_ipc::decode::<ToWorker>(&frame).unwrap() {
                ToWorker::Job(h) => asm.header(h).unwrap(),
                ToWorker::AudioChunk(c) => asm.chunk(c).unwrap(),
                other => panic!("unexpected {other:?}"),
            };
        }
        let job = job.unwrap();
        assert_eq!((job.id, job.samples), (7, expected));
        let frame = asr_ipc::read_frame(&mut r).unwrap().expect("the cancel");
        assert_eq!(
            asr_ipc::decode::<ToWorker>(&frame).unwrap(),
            ToWorker::Cancel { job_id: 7 }
        );
        assert!(asr_ipc::read_frame(&mut r).unwrap().is_none(), "clean EOF");
    }
}
