//! Audio in, turns out: the input buffer, server-VAD turn detection, and
//! commits (by the VAD or by the client).

use std::time::Instant;

use ractor::ActorRef;

use super::{samples_to_ms, Open, SessionMsg, SessionState, MIN_COMMIT_SAMPLES};
use crate::error_code::Code;
use crate::realtime::protocol::{ProtocolError, ServerEvent, TurnDetection};
use crate::realtime::stable::StablePrefix;
use crate::realtime::vad::Turn;

impl SessionState {
    /// Adds 16 kHz audio to the buffer and runs turn detection on it.
    pub(super) fn push_audio(&mut self, myself: &ActorRef<SessionMsg>, samples: &[i16]) {
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

    pub(super) fn prefix_samples(&self) -> usize {
        match self.config.turn {
            TurnDetection::ServerVad(p) => {
                p.prefix_padding_ms as usize * asr_ipc::SAMPLE_RATE as usize / 1000
            }
            TurnDetection::None => 0,
        }
    }

    pub(super) fn new_item(&mut self) -> (u64, String) {
        let seq = self.next_seq;
        self.next_seq += 1;
        (
            seq,
            format!("item_{}_{seq}", &self.id[5..self.id.len().min(17)]),
        )
    }

    pub(super) fn speech_started(&mut self, myself: &ActorRef<SessionMsg>, at: u64) {
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

    pub(super) fn speech_stopped(&mut self, myself: &ActorRef<SessionMsg>, at: u64) {
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
    pub(super) fn commit_open(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        end: u64,
        stopped_at: Instant,
    ) {
        let Some(open) = self.open.take() else { return };
        if let Some(t) = self.partial_task.take() {
            t.abort();
        }
        let from = (open.from.max(self.buffer_start) - self.buffer_start) as usize;
        let to = ((end - self.buffer_start) as usize).min(self.buffer.len());
        let audio = self.buffer[from.min(to)..to].to_vec();
        self.buffer.drain(..to);
        self.buffer_start += to as u64;
        self.commit(
            myself,
            open.seq,
            open.item_id,
            audio,
            open.stable,
            stopped_at,
        );
    }

    pub(super) fn manual_commit(
        &mut self,
        myself: &ActorRef<SessionMsg>,
        event_id: Option<String>,
    ) {
        let mut tail = Vec::new();
        if let Err(e) = self.resampler.flush(&mut tail) {
            return self.resampler_failed(myself, &e, event_id);
        }
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
}
