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
use super::protocol::{self, ClientEvent, ProtocolError, ServerEvent, SessionConfig, TurnDetection};
use super::resample::StreamResampler;
use super::stable::StablePrefix;
use super::vad::{Turn, TurnDetector};
use crate::api::{AsrError, JobClass, Transcript, TranscriptionRequest};
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
            resampler: StreamResampler::new(config.rate),
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
            ClientEvent::SessionUpdate {
                config, beta, ..
            } => self.update(myself, config, beta),
            ClientEvent::Append { event_id, pcm } => self.append(myself, &pcm, event_id),
            ClientEvent::Commit { event_id } => self.manual_commit(myself, event_id),
            ClientEvent::Clear { .. } => {
                self.discard_open();
                self.resampler = StreamResampler::new(self.config.rate);
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
            let mut tail = Vec::new();
            self.resampler.flush(&mut tail);
            self.push_audio(myself, &tail);
            self.resampler = StreamResampler::new(config.rate);
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
        let incoming_16k = samples.len() as u64 * u64::from(asr_ipc::SAMPLE_RATE)
            / u64::from(self.config.rate);
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
        self.resampler.push(&samples, &mut resampled);
        self.push_audio(myself, &resampled);
    }

    /// Adds 16 kHz audio to the buffer and runs turn detection on it.
    fn push_audio(&mut self, myself: &ActorRef<SessionMsg>, samples: &[i16]) {
        self.buffer.extend_from_slice(samples);
        let Some(vad) = self.vad.as_mut() else {
            return;
        };
        let turns = vad.push(samples);
        for turn in turns {
            match turn {
                Turn::Started(at) => self.speech_started(myself, at),
                Turn::Stopped(at) => self.speech_stopped(myself, at),
            }
        }
        let cap = self.limits.max_utterance_samples() as u64;
        if let Some(open) = &self.open {
            let end = self.buffer_start + self.buffer.len() as u64;
            if end.saturating_sub(open.from) >= cap {
                // A turn longer than the cap is committed in pieces.
                self.commit_open(myself, end, Instant::now());
                let (seq, item_id) = self.new_item();
                self.open = Some(Open::new(seq, item_id, end));
            }
        } else {
            // In silence keep only the prefix padding.
            let keep = self.prefix_samples().max(crate::realtime::vad::FRAME * 2);
            if self.buffer.len() > keep * 2 {
                let drop = self.buffer.len() - keep;
                self.buffer.drain(..drop);
                self.buffer_start += drop as u64;
            }
        }
    }

    fn prefix_samples(&self) -> usize {
        match self.config.turn {
            TurnDetection::ServerVad(p) => {
                p.prefix_padding_ms as usize * asr_ipc::SAMPLE_RATE as usize / 1000
            }
            TurnDetection::None => 0,
        }
    }

    fn new_item(&mut self) -> (u64, String) {
        let seq = self.next_seq;
        self.next_seq += 1;
        (seq, format!("item_{}_{seq}", &self.id[5..self.id.len().min(17)]))
    }

    fn speech_started(&mut self, myself: &ActorRef<SessionMsg>, at: u64) {
        let from = at
            .saturating_sub(self.prefix_samples() as u64)
            .max(self.buffer_start);
        let (seq, item_id) = self.new_item();
        self.send(
            myself,
            ServerEvent::SpeechStarted {
                item_id: item_id.clone(),
                audio_start_ms: samples_to_ms(at),
            },
        );
        self.open = Some(Open::new(seq, item_id, from));
    }

    fn speech_stopped(&mut self, myself: &ActorRef<SessionMsg>, at: u64) {
        let Some(open) = &self.open else { return };
        let item_id = open.item_id.clone();
        let stopped_at = Instant::now();
        self.send(
            myself,
            ServerEvent::SpeechStopped {
                item_id,
                audio_end_ms: samples_to_ms(at),
            },
        );
        let end = self.buffer_start + self.buffer.len() as u64;
        self.commit_open(myself, end, stopped_at);
    }

    /// Commits the open VAD utterance: its audio up to `end`.
    fn commit_open(&mut self, myself: &ActorRef<SessionMsg>, end: u64, stopped_at: Instant) {
        let Some(open) = self.open.take() else { return };
        if let Some(t) = self.partial_task.take() {
            t.abort();
        }
        let from = (open.from.max(self.buffer_start) - self.buffer_start) as usize;
        let to = ((end - self.buffer_start) as usize).min(self.buffer.len());
        let audio = self.buffer[from.min(to)..to].to_vec();
        self.buffer.drain(..to);
        self.buffer_start += to as u64;
        self.commit(myself, open.seq, open.item_id, audio, open.stable, stopped_at);
    }

    fn manual_commit(&mut self, myself: &ActorRef<SessionMsg>, event_id: Option<String>) {
        let mut tail = Vec::new();
        self.resampler.flush(&mut tail);
        self.buffer.extend_from_slice(&tail);
        if self.buffer.len() < MIN_COMMIT_SAMPLES {
            return self.send_error(
                myself,
                ProtocolError::new(
                    Code::AudioBufferEmpty,
                    format!(
                        "buffer too small: a commit needs at least 100 ms of audio, the buffer has {} ms",
                        samples_to_ms(self.buffer.len() as u64)
                    ),
                ),
                event_id,
            );
        }
        let (seq, item_id, stable) = match self.open.take() {
            Some(o) => (o.seq, o.item_id, o.stable),
            None => {
                let (s, i) = self.new_item();
                (s, i, StablePrefix::default())
            }
        };
        if let Some(v) = self.vad.as_mut() {
            v.reset_turn();
        }
        let audio = std::mem::take(&mut self.buffer);
        self.buffer_start += audio.len() as u64;
        self.commit(myself, seq, item_id, audio, stable, Instant::now());
    }

    /// `committed`, then the utterance goes to the node (or is refused).
    fn commit(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        seq: u64,
        item_id: String,
        audio: Vec<i16>,
        stable: StablePrefix,
        stopped_at: Instant,
    ) {
        let previous_item_id = self.previous_item.replace(item_id.clone());
        self.send(
            myself,
            ServerEvent::Committed {
                item_id: item_id.clone(),
                previous_item_id,
            },
        );
        let audio_secs = audio.len() as f64 / f64::from(asr_ipc::SAMPLE_RATE);
        let span = tracing::info_span!(
            parent: &self.span,
            "realtime.utterance",
            item_id = %item_id,
            audio_secs,
            outcome = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
        );
        let mut p = Pending {
            seq,
            item_id,
            audio_secs,
            stopped_at,
            stable,
            span,
            task: None,
            done: None,
        };
        let waiting = self.pending.iter().filter(|p| p.done.is_none()).count();
        if waiting >= self.limits.realtime_max_pending_utterances {
            let e = AsrError::Busy {
                retry_after: Duration::from_secs(1),
                queued: waiting,
            };
            p.done = Some(failure(&p.item_id, &e));
            p.span.record("outcome", "queue_full");
            crate::metrics::realtime_utterance("queue_full", None);
        } else {
            let fault = self.fault.take();
            p.task = Some(self.submit(myself, seq, audio, false, &p.span, fault));
        }
        self.pending.push_back(p);
        self.flush_done(myself);
    }

    fn request(&self, audio: Vec<i16>, span: &Span) -> TranscriptionRequest {
        let mut req = TranscriptionRequest::new(audio);
        req.class = JobClass::Realtime;
        req.parent_span = span.clone();
        req.options.beam_size = self.node.config().beam_size;
        req.options.language = self.config.language.clone();
        req.options.initial_prompt = self.config.prompt.clone();
        req
    }

    fn submit(
        &self,
        myself: &ActorRef<SessionMsg>,
        seq: u64,
        audio: Vec<i16>,
        partial: bool,
        span: &Span,
        fault: Option<crate::api::Fault>,
    ) -> AbortHandle {
        let mut req = self.request(audio, span);
        req.fault = fault;
        let node = self.node.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            let answer = node.transcribe(req).await;
            let _ = me.cast(SessionMsg::Decoded {
                seq,
                partial,
                answer,
            });
        })
        .abort_handle()
    }

    fn on_final(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        seq: u64,
        answer: Result<Transcript, AsrError>,
    ) {
        let Some(p) = self.pending.iter_mut().find(|p| p.seq == seq) else {
            return;
        };
        p.task = None;
        let latency = p.stopped_at.elapsed();
        p.span.record("latency_ms", latency.as_secs_f64() * 1e3);
        p.done = Some(match answer {
            Ok(t) => {
                p.span.record("outcome", "ok");
                crate::metrics::realtime_utterance("ok", Some(latency));
                vec![ServerEvent::Completed {
                    item_id: p.item_id.clone(),
                    transcript: p.stable.finish(&t.result.text),
                    audio_secs: p.audio_secs,
                }]
            }
            Err(e) => {
                let code = e.code().name();
                tracing::warn!(parent: &p.span, error = %e, "utterance failed");
                p.span.record("outcome", code);
                crate::metrics::realtime_utterance(code, None);
                failure(&p.item_id, &e)
            }
        });
        self.flush_done(myself);
    }

    /// Sends the terminal events of finished utterances, in commit order.
    fn flush_done(&mut self, myself: &ActorRef<SessionMsg>) {
        while self.pending.front().is_some_and(|p| p.done.is_some()) {
            let Some(p) = self.pending.pop_front() else { break };
            for ev in p.done.unwrap_or_default() {
                self.send(myself, ev);
            }
            self.span.record("utterances", p.seq as i64);
        }
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

    /// A provisional decode of the open utterance, at most every
    /// `--realtime-partial-interval-ms`, only while nothing waits in the
    /// queue and no other decode of this session is outstanding.
    fn maybe_partial(&mut self, myself: &ActorRef<SessionMsg>) {
        let Some(interval) = self.limits.partial_interval() else {
            return;
        };
        let Some(open) = &self.open else { return };
        if open.partial_in_flight
            || open.last_partial.elapsed() < interval
            || self.pending.iter().any(|p| p.done.is_none())
        {
            return;
        }
        let status = self.node.status();
        if status.queue_depth > 0 || !status.ready {
            return;
        }
        let from = (open.from.max(self.buffer_start) - self.buffer_start) as usize;
        if self.buffer.len().saturating_sub(from) < MIN_PARTIAL_SAMPLES {
            return;
        }
        let audio = self.buffer[from..].to_vec();
        let seq = open.seq;
        let span = tracing::info_span!(parent: &self.span, "realtime.partial", item_id = %open.item_id);
        let task = self.submit(myself, seq, audio, true, &span, None);
        if let Some(open) = self.open.as_mut() {
            open.partial_in_flight = true;
            open.last_partial = Instant::now();
        }
        self.partial_task = Some(task);
    }

    fn on_partial(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        seq: u64,
        answer: Result<Transcript, AsrError>,
    ) {
        let Some(open) = self.open.as_mut().filter(|o| o.seq == seq) else {
            return;
        };
        open.partial_in_flight = false;
        open.last_partial = Instant::now();
        self.partial_task = None;
        // A failed provisional decode costs nothing: the final decides.
        let Ok(t) = answer else { return };
        if let Some(delta) = open.stable.provisional(&t.result.text) {
            let item_id = open.item_id.clone();
            self.send(myself, ServerEvent::Delta { item_id, delta });
        }
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

/// The terminal events of a failed utterance: an `error` event (with a
/// retry hint when retrying can help), then `…transcription.failed`.
fn failure(item_id: &str, e: &AsrError) -> Vec<ServerEvent> {
    let error = ProtocolError::new(e.code(), e.to_string());
    vec![
        ServerEvent::Error {
            error: error.clone(),
            client_event_id: None,
            item_id: Some(item_id.to_string()),
            retry_after_ms: e.retry_after().map(|d| d.as_millis() as u64),
        },
        ServerEvent::Failed {
            item_id: item_id.to_string(),
            error,
        },
    ]
}

fn samples_to_ms(samples: u64) -> u64 {
    samples * 1000 / u64::from(asr_ipc::SAMPLE_RATE)
}
