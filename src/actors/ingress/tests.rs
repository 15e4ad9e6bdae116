//! The ingress alone: a real `IngressActor` with a probe for the queue.

use super::*;
use crate::actors::testing::{answer, next, probe};

const SEC: Duration = Duration::from_secs(1);

async fn ingress(
    config: NodeConfig,
) -> (
    ActorRef<IngressMsg>,
    tokio::sync::mpsc::UnboundedReceiver<QueueMsg>,
) {
    let (queue, rx) = probe::<QueueMsg>().await;
    let args = IngressArgs {
        config: Arc::new(config),
        queue,
    };
    let (i, _) = Actor::spawn(None, IngressActor, args)
        .await
        .expect("ingress");
    (i, rx)
}

fn request(
    secs: f64,
) -> (
    Box<TranscriptionRequest>,
    crate::actors::testing::Answer,
    Reply,
) {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let req = TranscriptionRequest::new(vec![0; (secs * 16_000.0) as usize]);
    (Box::new(req), rx, tx.into())
}

fn submitted(msg: QueueMsg) -> QueuedJob {
    match msg {
        QueueMsg::Submit(j) => j,
        other => panic!("expected Submit, got {other:?}"),
    }
}

#[tokio::test]
async fn jobs_get_ids_audio_length_and_a_deadline_no_later_than_the_config() {
    let config = NodeConfig {
        max_queue_wait_secs: 30.0,
        ..NodeConfig::default()
    };
    let (i, mut queue) = ingress(config).await;
    let (req, _a, reply) = request(2.0);
    i.cast(IngressMsg::Transcribe(req, reply)).unwrap();
    let a = submitted(next(&mut queue).await);
    assert_eq!((a.id, a.audio_secs, a.attempts), (1, 2.0, 0));
    assert_eq!(a.deadline - a.admitted_at, 30 * SEC);
    assert_eq!(a.fingerprint, fingerprint(&a.payload.samples));
    // A request may shorten its wait, never lengthen it.
    let (mut req, _b, reply) = request(1.0);
    req.max_queue_wait = Some(Duration::from_millis(200));
    i.cast(IngressMsg::Transcribe(req, reply)).unwrap();
    let b = submitted(next(&mut queue).await);
    assert_eq!(b.id, 2);
    assert_eq!(b.deadline - b.admitted_at, Duration::from_millis(200));
    let (mut req, _c, reply) = request(1.0);
    req.max_queue_wait = Some(3600 * SEC);
    i.cast(IngressMsg::Transcribe(req, reply)).unwrap();
    let c = submitted(next(&mut queue).await);
    assert_eq!(c.deadline - c.admitted_at, 30 * SEC);
}

#[tokio::test]
async fn audio_over_the_limit_is_refused_before_the_queue() {
    let config = NodeConfig {
        max_audio_secs: 1.0,
        ..NodeConfig::default()
    };
    let (i, mut queue) = ingress(config).await;
    let (req, rx, reply) = request(2.0);
    i.cast(IngressMsg::Transcribe(req, reply)).unwrap();
    assert!(matches!(
        answer(rx, SEC).await,
        Err(AsrError::Rejected(asr_ipc::WorkerError::InvalidAudio(_)))
    ));
    assert!(queue.try_recv().is_err());
}

#[tokio::test]
async fn after_stop_admitting_every_request_is_refused() {
    let (i, mut queue) = ingress(NodeConfig::default()).await;
    i.cast(IngressMsg::StopAdmitting).unwrap();
    let (req, rx, reply) = request(1.0);
    i.cast(IngressMsg::Transcribe(req, reply)).unwrap();
    assert!(matches!(answer(rx, SEC).await, Err(AsrError::ShuttingDown)));
    assert!(queue.try_recv().is_err());
}

#[tokio::test]
async fn a_stopped_queue_is_an_internal_error_not_a_lost_reply() {
    let (q, _rx) = probe::<QueueMsg>().await;
    q.stop(None);
    crate::actors::testing::eventually("the queue stopped", || {
        q.get_status() == ractor::ActorStatus::Stopped
    })
    .await;
    let args = IngressArgs {
        config: Arc::new(NodeConfig::default()),
        queue: q,
    };
    let (i, _) = Actor::spawn(None, IngressActor, args).await.unwrap();
    let (req, rx, reply) = request(1.0);
    i.cast(IngressMsg::Transcribe(req, reply)).unwrap();
    assert!(matches!(answer(rx, SEC).await, Err(AsrError::Internal(_))));
}
