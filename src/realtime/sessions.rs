//! `SessionsActor`: the supervisor of a node's realtime sessions.
//!
//! One per node, spawned on first use, linked under the node's root
//! supervisor (which ignores children it does not know, so nothing here
//! can stop the ASR tree) and found again through ractor's registry by a
//! name derived from that supervisor's id. It admits sessions up to
//! `--realtime-max-sessions` (the WebSocket upgrade answers 429 with
//! `Retry-After` past that), spawns each [`SessionActor`] linked under
//! itself, and counts them down when they stop or fail: a session that
//! panics is logged and its socket closes; the supervisor and the other
//! sessions carry on.

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort, SupervisionEvent};

use super::session::{SessionActor, SessionArgs, SessionMsg};
use crate::AsrNode;

/// How long a client refused for too many sessions should wait.
pub const SESSIONS_RETRY_AFTER: Duration = Duration::from_secs(5);

/// Why a session was not opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// `--realtime-max-sessions` sessions are open.
    #[error("{open} realtime sessions are open, the most this node takes")]
    TooMany {
        /// Sessions open.
        open: usize,
    },
    /// The session actor could not start.
    #[error("the session could not start: {0}")]
    Spawn(String),
}

/// Messages of the [`SessionsActor`].
pub enum SessionsMsg {
    /// Open a session (or refuse).
    Open(
        Box<SessionArgs>,
        RpcReplyPort<Result<ActorRef<SessionMsg>, OpenError>>,
    ),
    /// How many sessions are open.
    Count(RpcReplyPort<usize>),
}

/// The sessions supervisor (see the module docs).
pub struct SessionsActor;

/// State of the [`SessionsActor`].
pub struct SessionsState {
    max: usize,
    open: usize,
}

impl Actor for SessionsActor {
    type Msg = SessionsMsg;
    type State = SessionsState;
    type Arguments = usize;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        max: usize,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(SessionsState { max, open: 0 })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SessionsMsg::Count(reply) => {
                let _ = reply.send(state.open);
            }
            SessionsMsg::Open(args, reply) => {
                if state.open >= state.max {
                    let _ = reply.send(Err(OpenError::TooMany { open: state.open }));
                    return Ok(());
                }
                let answer =
                    match Actor::spawn_linked(None, SessionActor, *args, myself.get_cell()).await {
                        Ok((session, _)) => {
                            state.open += 1;
                            crate::metrics::realtime_sessions_active(state.open);
                            Ok(session)
                        }
                        Err(e) => Err(OpenError::Spawn(e.to_string())),
                    };
                let _ = reply.send(answer);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<Self::Msg>,
        evt: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match evt {
            SupervisionEvent::ActorTerminated(..) => {}
            SupervisionEvent::ActorFailed(cell, err) => {
                tracing::error!(actor = %cell.get_id(), error = %err, "a realtime session failed; its socket is closed");
            }
            _ => return Ok(()),
        }
        state.open = state.open.saturating_sub(1);
        crate::metrics::realtime_sessions_active(state.open);
        Ok(())
    }
}

/// The sessions supervisor of `node`, spawned on first use.
pub async fn of(node: &AsrNode) -> Result<ActorRef<SessionsMsg>, OpenError> {
    let name = format!("whisper-node.realtime.{}", node.supervisor().get_id());
    if let Some(cell) = ractor::registry::where_is(name.clone()) {
        return Ok(cell.into());
    }
    let max = node.config().realtime.realtime_max_sessions;
    let parent = node.supervisor().get_cell();
    match Actor::spawn_linked(Some(name.clone()), SessionsActor, max, parent).await {
        Ok((sessions, _)) => Ok(sessions),
        // Another request spawned it first.
        Err(e) => ractor::registry::where_is(name)
            .map(Into::into)
            .ok_or_else(|| OpenError::Spawn(e.to_string())),
    }
}

/// Opens a session of `node` (see [`SessionsMsg::Open`]).
pub async fn open(node: &AsrNode, args: SessionArgs) -> Result<ActorRef<SessionMsg>, OpenError> {
    let sessions = of(node).await?;
    match sessions
        .call(|reply| SessionsMsg::Open(Box::new(args), reply), None)
        .await
    {
        Ok(ractor::rpc::CallResult::Success(answer)) => answer,
        _ => Err(OpenError::Spawn(
            "the sessions supervisor is not running".into(),
        )),
    }
}

/// Sessions open on `node` (0 before the first).
pub async fn count(node: &AsrNode) -> usize {
    let name = format!("whisper-node.realtime.{}", node.supervisor().get_id());
    let Some(cell) = ractor::registry::where_is(name) else {
        return 0;
    };
    let sessions: ActorRef<SessionsMsg> = cell.into();
    match sessions.call(SessionsMsg::Count, None).await {
        Ok(ractor::rpc::CallResult::Success(n)) => n,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child that panics on its first message.
    struct Doomed;

    impl Actor for Doomed {
        type Msg = ();
        type State = ();
        type Arguments = ();

        async fn pre_start(
            &self,
            _myself: ActorRef<()>,
            _args: (),
        ) -> Result<(), ActorProcessingErr> {
            Ok(())
        }

        async fn handle(
            &self,
            _myself: ActorRef<()>,
            _msg: (),
            _state: &mut (),
        ) -> Result<(), ActorProcessingErr> {
            panic!("a bug in a session");
        }
    }

    #[tokio::test]
    async fn a_session_that_panics_does_not_stop_the_supervisor() {
        let (sessions, _) = Actor::spawn(None, SessionsActor, 4).await.unwrap();
        for _ in 0..3 {
            let (child, handle) = Actor::spawn_linked(None, Doomed, (), sessions.get_cell())
                .await
                .unwrap();
            child.cast(()).unwrap();
            handle.await.unwrap();
        }
        let open = sessions.call(SessionsMsg::Count, None).await.unwrap();
        assert!(matches!(open, ractor::rpc::CallResult::Success(0)));
        assert_eq!(sessions.get_status(), ractor::ActorStatus::Running);
        sessions.stop(None);
    }
}
