//! Helpers for the actors' unit tests: jobs with a reply port to watch,
//! probe actors that forward what they receive, and polling with a
//! deadline instead of sleeping.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::sync::{mpsc, oneshot};

use super::queue::{fingerprint, JobPayload, QueuedJob};
use crate::api::{AsrError, Transcript};

/// Where a test job's answer arrives.
pub type Answer = oneshot::Receiver<Result<Transcript, AsrError>>;

/// A job of `secs` seconds of silence (distinct audio per `id`, so
/// fingerprints differ) that must be dispatched within `wait`.
pub fn job(id: u64, secs: f64, wait: Duration) -> (QueuedJob, Answer) {
    let mut samples = vec![0i16; (secs * 16_000.0) as usize + 1];
    samples[0] = id as i16;
    let (tx, rx) = oneshot::channel();
    let now = Instant::now();
    let job = QueuedJob {
        id,
        fingerprint: fingerprint(&samples),
        payload: Arc::new(JobPayload {
            samples,
            options: Default::default(),
            fault: None,
            stream_segments: false,
        }),
        audio_secs: secs,
        admitted_at: now,
        deadline: now + wait,
        span: tracing::Span::none(),
        reply: tx.into(),
        attempts: 0,
        progress: None,
        segments: None,
        queue_wait: None,
        class: Default::default(),
        solo: false,
    };
    (job, rx)
}

/// An actor that forwards every message it gets to a channel.
pub struct Probe<M>(PhantomData<fn() -> M>);

impl<M: ractor::Message> Actor for Probe<M> {
    type Msg = M;
    type State = mpsc::UnboundedSender<M>;
    type Arguments = mpsc::UnboundedSender<M>;

    async fn pre_start(
        &self,
        _myself: ActorRef<M>,
        tx: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(tx)
    }

    async fn handle(
        &self,
        _myself: ActorRef<M>,
        msg: M,
        tx: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let _ = tx.send(msg);
        Ok(())
    }
}

/// Spawns a [`Probe`]; what it receives comes out of the receiver.
pub async fn probe<M: ractor::Message>() -> (ActorRef<M>, mpsc::UnboundedReceiver<M>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let (actor, _) = Actor::spawn(None, Probe(PhantomData), tx)
        .await
        .expect("probe actor");
    (actor, rx)
}

/// The next message a probe got, within a second.
pub async fn next<M>(rx: &mut mpsc::UnboundedReceiver<M>) -> M {
    tokio::time::timeout(Duration::from_secs(1), rx.recv())
        .await
        .expect("a message within 1 s")
        .expect("the probe is running")
}

/// The answer of a job, within `within`.
pub async fn answer(rx: Answer, within: Duration) -> Result<Transcript, AsrError> {
    tokio::time::timeout(within, rx)
        .await
        .expect("an answer in time")
        .expect("the reply port was answered, not dropped")
}

/// Polls `cond` every 5 ms until it holds, failing after a second.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(1);
    while !cond() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
