//! [`Clock`]: the wall-clock phases of one job.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use asr_ipc::{Phase, Timings};

/// Wall-clock phase recorder.
pub struct Clock {
    start_unix_ns: u64,
    start: Instant,
    phases: Vec<Phase>,
}

impl Default for Clock {
    fn default() -> Self {
        Self::start()
    }
}

impl Clock {
    /// Starts the clock now.
    pub fn start() -> Self {
        let start_unix_ns = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Self {
            start_unix_ns,
            start: Instant::now(),
            phases: Vec::new(),
        }
    }

    fn now_ns(&self) -> u64 {
        self.start_unix_ns + self.start.elapsed().as_nanos() as u64
    }

    /// Runs `f` and records it as a phase.
    pub fn phase<T>(
        &mut self,
        name: &str,
        window: Option<u32>,
        temperature: Option<f32>,
        f: impl FnOnce() -> T,
    ) -> T {
        let start_unix_ns = self.now_ns();
        let out = f();
        self.phases.push(Phase {
            name: name.to_string(),
            start_unix_ns,
            end_unix_ns: self.now_ns(),
            window,
            temperature,
        });
        out
    }

    /// Records a phase timed elsewhere (one engine call shared by the
    /// windows of several jobs), from [`unix_now_ns`] readings.
    pub fn record(
        &mut self,
        name: &str,
        window: Option<u32>,
        temperature: Option<f32>,
        start_unix_ns: u64,
        end_unix_ns: u64,
    ) {
        self.phases.push(Phase {
            name: name.to_string(),
            start_unix_ns,
            end_unix_ns,
            window,
            temperature,
        });
    }

    /// The recorded phases and the total.
    pub fn finish(self) -> Timings {
        Timings {
            started_unix_ns: self.start_unix_ns,
            total_us: self.start.elapsed().as_micros() as u64,
            phases: self.phases,
            idle_before_us: None,
        }
    }
}

/// Wall-clock time now, nanoseconds since the Unix epoch.
pub fn unix_now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}
