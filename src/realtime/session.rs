//! `SessionActor`: one realtime transcription session.
//!
//! # Protocol
//! - In: [`SessionMsg::Frame`] from the WebSocket reader (one at a time:
//!   the reader waits for each to be handled, so a fast client is slowed
//!   by TCP instead of filling a mailbox), [`SessionMsg::Tick`] from its
//!   own timer (idle timeout, session length, partial cadence),
//!   [`SessionMsg::Decoded`] from its decode tasks.
//! - Out: events on a bounded channel to the WebSocket writer task, which
//!   it owns; jobs to the node ([`crate::AsrNode::transcribe`], class
//!   [`JobClass::Realtime`]), each in a task it aborts when it stops, so a
//!   queued utterance of a session that ended is dropped before decode.
//!
//! # Memory
//! The input buffer holds at most `--realtime-max-utterance-secs` of 16 kHz
//! audio; in silence (server VAD) only the prefix padding is kept. At most
//! `--realtime-max-pending-utterances` committed utterances wait for their
//! transcript, each at most that long. Outgoing events wait in a channel of
//! `--realtime-send-buffer-events`; a client that lets it fill is closed.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tracing::Span;

use super::config::RealtimeConfig;
use super::protocol::{
    self, ClientEvent, ProtocolError, ServerEvent, SessionConfig, TurnDetection,
};
use super::resample::StreamResampler;
use super::stable::StablePrefix;
use super::vad::TurnDetector;
use crate::api::{AsrError, Transcript};
use crate::error_code::Code;
use crate::AsrNode;

/// A frame from the client, as the reader saw it.
#[derive(Debug)]
pub enum Inbound {
    /// A text frame.
    Text(String),
    /// A binary frame of this many bytes (not part of the protocol).
    Binary(usize),
}

/// What the writer task sends.
#[derive(Debug)]
pub enum Outbound {
    /// An event (JSON text).
    Event(String),
    /// Close the socket with this code and reason.
    Close(actix_ws::CloseCode, String),
}

mod decode;
mod turns;

/// Messages of the [`SessionActor`].
#[derive(Debug)]
pub enum SessionMsg {
    /// A client frame; the port is answered once it is handled.
    Frame(Inbound, RpcReplyPort<()>),
    /// The client closed the socket or the connection dropped.
    ClientGone,
    /// Timer: idle timeout, session length, partial cadence.
    Tick,
    /// A decode of utterance `seq` (or of the open one, `partial`) ended.
    Decoded {
        /// Utterance sequence number.
        seq: u64,
        /// A provisional decode of the open utterance.
        partial: bool,
        /// The answer.
        answer: Result<Transcript, AsrError>,
    },
}

/// Arguments of a [`SessionActor`].
pub struct SessionArgs {
    /// Session id (`sess_…`).
    pub id: String,
    /// The node.
    pub node: AsrNode,
    /// The WebSocket sender (the actor's writer task owns it).
    pub socket: actix_ws::Session,
    /// Parent of the session's span (the upgrade request's span).
    pub parent_span: Span,
    /// Test hook: a worker fault for the session's first committed
    /// utterance (`X-Fault-Inject` on the upgrade, honoured only with
    /// `--enable-fault-injection`).
    pub fault: Option<crate::api::Fault>,
}

/// One realtime session (see the module docs).
pub struct SessionActor;

/// The utterance open under server VAD.
struct Open {
    seq: u64,
    item_id: String,
    /// Absolute 16 kHz sample where the item's audio starts (speech start
    /// minus the prefix padding).
    from: u64,
    stable: StablePrefix,
    partial_in_flight: bool,
    last_partial: Instant,
}

/// A committed utterance waiting for its terminal event.
struct Pending {
    seq: u64,
    item_id: String,
    audio_secs: f64,
    /// End of speech (or the commit), for the latency.
    stopped_at: Instant,
    stable: StablePrefix,
    span: Span,
    task: Option<AbortHandle>,
    /// Its terminal events, once known (sent in commit order).
    done: Option<Vec<ServerEvent>>,
}

/// State of a [`SessionActor`].
pub struct SessionState {
    id: String,
    node: AsrNode,
    limits: RealtimeConfig,
    span: Span,
    config: SessionConfig,
    out: mpsc::Sender<Outbound>,
    writer: AbortHandle,
    resampler: StreamResampler,
    vad: Option<TurnDetector>,
    /// 16 kHz audio of the input buffer; `buffer[0]` is sample `buffer_start`.
    buffer: Vec<i16>,
    buffer_start: u64,
    open: Option<Open>,
    pending: VecDeque<Pending>,
    partial_task: Option<AbortHandle>,
    previous_item: Option<String>,
    next_seq: u64,
    next_event: u64,
    started: Instant,
    last_activity: Instant,
    closing: bool,
    fault: Option<crate::api::Fault>,
}

/// How often the session checks its timers.
pub const TICK: Duration = Duration::from_millis(100);

/// Shortest audio a commit transcribes (OpenAI: 100 ms).
const MIN_COMMIT_SAMPLES: usize = 1_600;

/// Shortest open utterance worth a provisional decode.
const MIN_PARTIAL_SAMPLES: usize = 16_000;

impl Actor for SessionActor {
    type Msg = SessionMsg;
    type State = SessionState;
    type Arguments = SessionArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: SessionArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let limits = args.node.config().realtime.clone();
        let (out, rx) = mpsc::channel(limits.realtime_send_buffer_events);
        let writer = tokio::spawn(write_events(args.socket, rx)).abort_handle();
        let span = tracing::info_span!(
            parent: &args.parent_span,
            "realtime.session",
            session_id = %args.id,
            utterances = 0i64,
            outcome = tracing::field::Empty,
        );
        let config = SessionConfig::default();
        let mut state = SessionState {
            id: args.id,
            node: args.node,
            span,
            resampler: StreamResampler::new(config.rate)?,
            vad: None,
            config,
            limits,
            out,
            writer,
            buffer: Vec::new(),
            buffer_start: 0,
            open: None,
            pending: VecDeque::new(),
            partial_task: None,
            previous_item: None,
            next_seq: 1,
            next_event: 1,
            started: Instant::now(),
            last_activity: Instant::now(),
            closing: false,
            fault: args.fault,
        };
        state.vad = match state.config.turn {
            TurnDetection::ServerVad(p) => Some(TurnDetector::new(p)),
            TurnDetection::None => None,
        };
        state.send(
            &myself,
            ServerEvent::Session {
                kind: "session.created",
                id: state.id.clone(),
                config: state.config.clone(),
            },
        );
        tracing::info!(parent: &state.span, session_id = %state.id, "realtime session opened");
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        myself.send_interval(TICK, || SessionMsg::Tick);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Dropping the decode futures closes their reply ports: the queue
        // drops those jobs before decode.
        for p in state.pending.drain(..) {
            if let Some(t) = p.task {
                t.abort();
            }
            if p.done.is_none() {
                p.span.record("outcome", "session_closed");
                crate::metrics::realtime_utterance("session_closed", None);
            }
        }
        if let Some(t) = state.partial_task.take() {
            t.abort();
        }
        if !state.closing {
            // Not closed on purpose (client gone): the writer has nothing
            // left to say.
            state.writer.abort();
        }
        state.span.record("outcome", "closed");
        tracing::info!(parent: &state.span, session_id = %state.id, "realtime session closed");
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        if state.closing {
            return Ok(());
        }
        match msg {
            SessionMsg::Frame(frame, reply) => {
                state.last_activity = Instant::now();
                match frame {
                    Inbound::Text(text) => state.on_text(&myself, &text),
                    Inbound::Binary(n) => state.send_error(
                        &myself,
                        ProtocolError::new(
                            Code::InvalidEvent,
                            format!(
                                "binary frames ({n} bytes) are not part of the protocol; \
                                 send audio as base64 in input_audio_buffer.append"
                            ),
                        ),
                        None,
                    ),
                }
                let _ = reply.send(());
            }
            SessionMsg::ClientGone => {
                tracing::info!(parent: &state.span, "client closed the session");
                myself.stop(Some("client gone".into()));
            }
            SessionMsg::Tick => state.on_tick(&myself),
            SessionMsg::Decoded {
                seq,
                partial,
                answer,
            } => {
                if partial {
                    state.on_partial(&myself, seq, answer);
                } else {
                    state.on_final(&myself, seq, answer);
                }
            }
        }
        Ok(())
    }
}

/// Sends the session's events until the channel closes or the socket does.
async fn write_events(mut socket: actix_ws::Session, mut rx: mpsc::Receiver<Outbound>) {
    while let Some(out) = rx.recv().await {
        match out {
            Outbound::Event(text) => {
                if socket.text(text).await.is_err() {
                    return;
                }
            }
            Outbound::Close(code, reason) => {
                let _ = socket
                    .close(Some(actix_ws::CloseReason {
                        code,
                        description: Some(reason),
                    }))
                    .await;
                return;
            }
        }
    }
    let _ = socket.close(None).await;
}

impl SessionState {
    /// Queues an event for the client; a client that lets the buffer fill
    /// is closed (it stopped reading).
    fn send(&mut self, myself: &ActorRef<SessionMsg>, event: ServerEvent) {
        let id = format!("event_{}", self.next_event);
        self.next_event += 1;
        match self.out.try_send(Outbound::Event(event.to_json(&id))) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!(parent: &self.span, "client is not reading its events; closing the session");
                self.span.record("outcome", "slow_consumer");
                self.writer.abort();
                self.closing = true;
                myself.stop(Some("slow consumer".into()));
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                self.closing = true;
                myself.stop(Some("socket closed".into()));
            }
        }
    }

    fn send_error(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        error: ProtocolError,
        client_event_id: Option<String>,
    ) {
        tracing::info!(parent: &self.span, code = error.code.name(), message = %error.message, "realtime client error");
        self.send(
            myself,
            ServerEvent::Error {
                error,
                client_event_id,
                item_id: None,
                retry_after_ms: None,
            },
        );
    }

    /// The resampler refused the audio (unreachable for the rates the
    /// protocol accepts): the client is told, the audio is not used.
    pub(super) fn resampler_failed(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        error: &crate::audio::AudioError,
        client_event_id: Option<String>,
    ) {
        tracing::error!(parent: &self.span, error = %error, rate = self.resampler.rate(), "realtime resampling failed");
        self.send_error(
            myself,
            ProtocolError::new(error.code(), error.to_string()),
            client_event_id,
        );
    }

    /// Sends a last error event, then closes the socket with `code`.
    fn close_with(&mut self, myself: &ActorRef<SessionMsg>, error: ProtocolError) {
        let reason = error.code.name().to_string();
        self.send_error(myself, error, None);
        if self.closing {
            return;
        }
        let _ = self
            .out
            .try_send(Outbound::Close(actix_ws::CloseCode::Policy, reason.clone()));
        self.span.record("outcome", reason.as_str());
        self.closing = true;
        myself.stop(Some(reason));
    }

    fn on_text(&mut self, myself: &ActorRef<SessionMsg>, text: &str) {
        let event = match protocol::parse(text, &self.config, self.limits.realtime_max_append_bytes)
        {
            Ok(e) => e,
            Err((e, id)) => return self.send_error(myself, e, id),
        };
        match event {
            ClientEvent::SessionUpdate { config, beta, .. } => self.update(myself, config, beta),
            ClientEvent::Append { event_id, pcm } => self.append(myself, &pcm, event_id),
            ClientEvent::Commit { event_id } => self.manual_commit(myself, event_id),
            ClientEvent::Clear { .. } => {
                self.discard_open();
                self.resampler.reset();
                self.buffer_start += self.buffer.len() as u64;
                self.buffer.clear();
                if let Some(v) = self.vad.as_mut() {
                    v.reset_turn();
                }
                self.send(myself, ServerEvent::Cleared);
            }
        }
    }

    fn update(&mut self, myself: &ActorRef<SessionMsg>, config: SessionConfig, beta: bool) {
        if config.rate != self.config.rate {
            let resampler = match StreamResampler::new(config.rate) {
                Ok(r) => r,
                Err(e) => return self.resampler_failed(myself, &e, None),
            };
            let mut tail = Vec::new();
            if let Err(e) = self.resampler.flush(&mut tail) {
                return self.resampler_failed(myself, &e, None);
            }
            self.push_audio(myself, &tail);
            self.resampler = resampler;
        }
        match (config.turn, self.vad.as_mut()) {
            (TurnDetection::ServerVad(p), Some(v)) => v.set_params(p),
            (TurnDetection::ServerVad(p), None) => self.vad = Some(TurnDetector::new(p)),
            (TurnDetection::None, _) => {
                self.vad = None;
                // An open turn keeps its audio in the buffer for the
                // client's commit.
                self.discard_open();
            }
        }
        self.config = config;
        let kind = if beta {
            "transcription_session.updated"
        } else {
            "session.updated"
        };
        self.send(
            myself,
            ServerEvent::Session {
                kind,
                id: self.id.clone(),
                config: self.config.clone(),
            },
        );
    }

    fn append(&mut self, myself: &ActorRef<SessionMsg>, pcm: &[u8], event_id: Option<String>) {
        let samples: Vec<i16> = pcm
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        let incoming_16k =
            samples.len() as u64 * u64::from(asr_ipc::SAMPLE_RATE) / u64::from(self.config.rate);
        if self.vad.is_none()
            && self.buffer.len() as u64 + incoming_16k > self.limits.max_utterance_samples() as u64
        {
            return self.send_error(
                myself,
                ProtocolError::new(
                    Code::AudioBufferFull,
                    format!(
                        "the input audio buffer holds at most {} s; commit or clear it first",
                        self.limits.realtime_max_utterance_secs
                    ),
                ),
                event_id,
            );
        }
        let mut resampled = Vec::with_capacity(incoming_16k as usize + 64);
        if let Err(e) = self.resampler.push(&samples, &mut resampled) {
            return self.resampler_failed(myself, &e, event_id);
        }
        self.push_audio(myself, &resampled);
    }

    fn discard_open(&mut self) {
        self.open = None;
        if let Some(t) = self.partial_task.take() {
            t.abort();
        }
    }

    fn on_tick(&mut self, myself: &ActorRef<SessionMsg>) {
        if self.started.elapsed() >= self.limits.max_session() {
            return self.close_with(
                myself,
                ProtocolError::new(
                    Code::SessionExpired,
                    format!(
                        "the session reached its maximum length of {} s",
                        self.limits.realtime_max_session_secs
                    ),
                ),
            );
        }
        if self.last_activity.elapsed() >= self.limits.idle_timeout() {
            return self.close_with(
                myself,
                ProtocolError::new(
                    Code::SessionIdle,
                    format!(
                        "no event for {} s; the session is closed",
                        self.limits.realtime_idle_timeout_secs
                    ),
                ),
            );
        }
        self.maybe_partial(myself);
    }
}

impl Open {
    fn new(seq: u64, item_id: String, from: u64) -> Self {
        Self {
            seq,
            item_id,
            from,
            stable: StablePrefix::default(),
            partial_in_flight: false,
            last_partial: Instant::now(),
        }
    }
}

fn samples_to_ms(samples: u64) -> u64 {
    samples * 1000 / u64::from(asr_ipc::SAMPLE_RATE)
}
