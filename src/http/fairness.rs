//! Per-client fairness: one client that floods the node cannot take every
//! place of the queue from the others.
//!
//! # Who is a client
//! [`ClientId`] is the one the key check finds ([`super::auth`]): the
//! request's verified API key when the node requires keys, else the peer's
//! IP address (the TCP peer: a node behind a proxy sees the proxy, which is
//! then one client; per-client fairness belongs in the proxy there). Only a
//! *verified* key is ever used (an unverified header is chosen by the
//! client, which could then become a new "client" per request).
//!
//! # The rule
//! The node has `slots` = queue capacity + 1 (the job in the worker) places.
//! A client is *active* while it holds a place (an admitted transcription
//! request, from admission to its answer) and for a while after each of its
//! requests: until the `Retry-After` it was given has passed, plus
//! [`GRACE`], so that a polite client waiting out a refusal still counts.
//! Each active client's share is `ceil(slots / active clients)` (at least
//! 1). A request of a client that already holds its share is refused with
//! 429 `client_over_share` + `Retry-After: 1`, *only while another client is
//! active*: a node with one client behaves exactly as without the rule, and
//! a flooder alone still gets the whole node. When a second client shows
//! up, the flooder's share shrinks and the places its finished requests free
//! go to the others.
//!
//! The check is made before the body is read (see [`super::expect`]), so the
//! refusal costs no upload.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub use super::auth::ClientId;

/// How long after its last request (or after the `Retry-After` it was
/// given) a client still counts as active.
pub const GRACE: Duration = Duration::from_secs(1);

/// `Retry-After` of a `client_over_share` refusal.
pub const OVER_SHARE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Most clients tracked at once; beyond it new clients are not limited
/// (the table cannot be grown without bound by many addresses).
pub const MAX_TRACKED: usize = 65_536;

#[derive(Debug)]
struct Entry {
    held: usize,
    /// Active until then even when holding nothing.
    active_until: Instant,
}

#[derive(Debug, Default)]
struct Table {
    clients: HashMap<ClientId, Entry>,
    last_prune: Option<Instant>,
}

impl Table {
    fn prune(&mut self, now: Instant) {
        if self
            .last_prune
            .is_some_and(|t| now.duration_since(t) < Duration::from_millis(250))
        {
            return;
        }
        self.last_prune = Some(now);
        self.clients
            .retain(|_, e| e.held > 0 || e.active_until > now);
    }

    fn active(&self, now: Instant) -> usize {
        self.clients
            .values()
            .filter(|e| e.held > 0 || e.active_until > now)
            .count()
    }
}

/// Why a request was refused by the fairness rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverShare {
    /// What the client holds.
    pub held: usize,
    /// Its share now.
    pub share: usize,
    /// Active clients now.
    pub active: usize,
}

/// The node's fairness table, shared by every HTTP worker. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Fairness {
    slots: usize,
    table: Arc<Mutex<Table>>,
}

/// A place held by a client; given back when dropped.
#[derive(Debug)]
pub struct Held {
    table: Arc<Mutex<Table>>,
    client: ClientId,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = t.clients.get_mut(&self.client) {
            e.held = e.held.saturating_sub(1);
        }
    }
}

impl Fairness {
    /// A table for a node with `slots` places (queue capacity + 1).
    pub fn new(slots: usize) -> Fairness {
        Fairness {
            slots: slots.max(1),
            table: Arc::new(Mutex::new(Table::default())),
        }
    }

    /// Whether a request of `client` would be refused now (nothing is
    /// recorded: the expect check, before the request is admitted).
    pub fn check(&self, client: &ClientId) -> Result<(), OverShare> {
        let now = Instant::now();
        let t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        self.verdict(&t, client, now)
    }

    fn verdict(&self, t: &Table, client: &ClientId, now: Instant) -> Result<(), OverShare> {
        let held = t.clients.get(client).map_or(0, |e| e.held);
        if held == 0 {
            return Ok(());
        }
        let mut active = t.active(now);
        if !t
            .clients
            .get(client)
            .is_some_and(|e| e.held > 0 || e.active_until > now)
        {
            active += 1;
        }
        if active <= 1 {
            return Ok(());
        }
        let share = self.slots.div_ceil(active).max(1);
        if held >= share {
            Err(OverShare {
                held,
                share,
                active,
            })
        } else {
            Ok(())
        }
    }

    /// Admits a request of `client` (a place held until the [`Held`] is
    /// dropped) or refuses it; either way the client counts as active for
    /// [`GRACE`] more.
    pub fn admit(&self, client: &ClientId) -> Result<Held, OverShare> {
        let now = Instant::now();
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        t.prune(now);
        let verdict = self.verdict(&t, client, now);
        if !t.clients.contains_key(client) && t.clients.len() >= MAX_TRACKED {
            // Table full: not tracked, not limited.
            return Ok(Held {
                table: Arc::new(Mutex::new(Table::default())),
                client: *client,
            });
        }
        let entry = t.clients.entry(*client).or_insert(Entry {
            held: 0,
            active_until: now,
        });
        entry.active_until = entry.active_until.max(now + GRACE);
        match verdict {
            Ok(()) => {
                entry.held += 1;
                Ok(Held {
                    table: self.table.clone(),
                    client: *client,
                })
            }
            Err(e) => {
                entry.active_until = entry.active_until.max(now + OVER_SHARE_RETRY_AFTER + GRACE);
                Err(e)
            }
        }
    }

    /// Records that `client` was refused for another reason (queue full…)
    /// and told to come back after `retry_after`: it stays active until
    /// then (plus [`GRACE`]), so its share is kept for it.
    pub fn refused(&self, client: &ClientId, retry_after: Duration) {
        let now = Instant::now();
        let mut t = self.table.lock().unwrap_or_else(|p| p.into_inner());
        t.prune(now);
        if !t.clients.contains_key(client) && t.clients.len() >= MAX_TRACKED {
            return;
        }
        let entry = t.clients.entry(*client).or_insert(Entry {
            held: 0,
            active_until: now,
        });
        entry.active_until = entry.active_until.max(now + retry_after + GRACE);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn peer(n: u8) -> ClientId {
        ClientId::Peer(IpAddr::from([127, 0, 0, n]))
    }

    #[test]
    fn a_lone_client_gets_every_place() {
        let f = Fairness::new(4);
        let held: Vec<_> = (0..10).map(|_| f.admit(&peer(1)).unwrap()).collect();
        assert_eq!(held.len(), 10, "alone, a client is never limited");
    }

    #[test]
    fn a_flooder_is_held_to_its_share_once_another_client_is_active() {
        let f = Fairness::new(4);
        let mut flood: Vec<_> = (0..4).map(|_| f.admit(&peer(1)).unwrap()).collect();
        // Another client is refused elsewhere (queue full) and waits.
        f.refused(&peer(2), Duration::from_secs(2));
        // Two active clients: share 2; the flooder holds 4.
        let e = f.admit(&peer(1)).unwrap_err();
        assert_eq!((e.held, e.share, e.active), (4, 2, 2));
        assert!(f.check(&peer(1)).is_err());
        flood.truncate(2);
        assert!(f.admit(&peer(1)).is_err(), "still at its share");
        flood.truncate(1);
        let again = f.admit(&peer(1)).expect("below its share");
        // The waiting client is admitted.
        let polite = f.admit(&peer(2)).expect("the other client gets a place");
        assert!(f.check(&peer(2)).is_ok(), "below its share of 2");
        drop((again, polite, flood));
    }
}
