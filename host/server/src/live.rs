//! Events of running runs, for the dashboard's live view: each run keeps what it said so
//! far, so a viewer who opens the page late sees it, then new events as they come. What
//! a run keeps is bounded: the events that give the run its shape (jobs and steps starting
//! and ending, outputs), and the newest [`HISTORY_LOG_BYTES`] of what steps said (log
//! lines, groups, annotations, notices); the step logs on disk
//! (`GET /api/runs/{id}/logs/{job}/{step}`) and the run's annotations have the rest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Events waiting for a slow viewer before it is told it missed some.
const BACKLOG: usize = 4096;

/// What steps said that a running run keeps for viewers who come late, in bytes.
pub const HISTORY_LOG_BYTES: usize = 1 << 20;

/// Viewers of one run's events at once, live or replayed; more are refused (503). Each
/// holds a little memory and a connection, and a finished run's replay reads files.
pub const MAX_VIEWERS: usize = 32;

/// Viewers of all runs at once: each holds a connection, and connections are shared by
/// everyone (see [`crate::http::MAX_CONNECTIONS`]).
pub const MAX_ALL_VIEWERS: usize = 256;

#[derive(Default)]
pub struct Live {
    runs: Mutex<HashMap<i64, Arc<Channel>>>,
    viewers: Arc<Mutex<HashMap<i64, usize>>>,
}

/// A viewer's place among a run's [`MAX_VIEWERS`], given back when dropped.
pub struct Viewer {
    viewers: Arc<Mutex<HashMap<i64, usize>>>,
    run: i64,
}

impl Drop for Viewer {
    fn drop(&mut self) {
        let mut viewers = lock(&self.viewers);
        if let Some(count) = viewers.get_mut(&self.run) {
            *count -= 1;
            if *count == 0 {
                viewers.remove(&self.run);
            }
        }
    }
}

pub struct Channel {
    history: Mutex<History>,
    sender: broadcast::Sender<Arc<str>>,
}

#[derive(Default)]
struct History {
    /// Events in order, each marked whether it is a log line.
    events: Vec<(Arc<str>, bool)>,
    log_bytes: usize,
    /// Log lines let go of, oldest first.
    dropped: usize,
}

/// A viewer's start: what was said before it came, and what comes next.
pub struct Subscription {
    pub history: Vec<Arc<str>>,
    /// Early log lines the history no longer holds.
    pub dropped: usize,
    pub receiver: broadcast::Receiver<Arc<str>>,
}

impl Live {
    /// Starts the channel of a run that is about to run.
    pub fn open(&self, run: i64) -> Arc<Channel> {
        let channel = Arc::new(Channel {
            history: Mutex::default(),
            sender: broadcast::channel(BACKLOG).0,
        });
        lock(&self.runs).insert(run, channel.clone());
        channel
    }

    /// Ends a run's channel: viewers see their stream end once they have read it.
    pub fn close(&self, run: i64) {
        lock(&self.runs).remove(&run);
    }

    /// A place among run `run`'s viewers, if there is one.
    pub fn view(&self, run: i64) -> Option<Viewer> {
        let mut viewers = lock(&self.viewers);
        if viewers.values().sum::<usize>() >= MAX_ALL_VIEWERS {
            return None;
        }
        let count = viewers.entry(run).or_default();
        if *count >= MAX_VIEWERS {
            return None;
        }
        *count += 1;
        Some(Viewer {
            viewers: self.viewers.clone(),
            run,
        })
    }

    /// `None` when the run is not running here: its events are on disk.
    pub fn subscribe(&self, run: i64) -> Option<Subscription> {
        let channel = lock(&self.runs).get(&run)?.clone();
        // Holding the history while subscribing means no event falls between the two.
        let history = lock(&channel.history);
        Some(Subscription {
            receiver: channel.sender.subscribe(),
            history: history.events.iter().map(|(e, _)| e.clone()).collect(),
            dropped: history.dropped,
        })
    }
}

impl Channel {
    /// Sends `event` to the viewers and keeps it for later ones; `log` says it is
    /// something a step said (a log line, a group, an annotation), which the history may
    /// let go of.
    pub fn send(&self, event: Arc<str>, log: bool) {
        let mut history = lock(&self.history);
        if log {
            history.log_bytes += event.len();
        }
        history.events.push((event.clone(), log));
        if history.log_bytes > HISTORY_LOG_BYTES {
            // Let go of the oldest log lines down to half the bound, so that the copying
            // happens once per half a bound of lines, not once per line.
            let History {
                events,
                log_bytes,
                dropped,
            } = &mut *history;
            events.retain(|(e, log)| {
                if *log && *log_bytes > HISTORY_LOG_BYTES / 2 {
                    *log_bytes -= e.len();
                    *dropped += 1;
                    false
                } else {
                    true
                }
            });
        }
        // No viewer is not an error.
        let _ = self.sender.send(event);
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_late_viewer_gets_the_history_then_new_events() {
        let live = Live::default();
        let channel = live.open(1);
        channel.send("a".into(), false);
        let mut sub = live.subscribe(1).unwrap();
        channel.send("b".into(), false);
        assert_eq!(sub.history, vec![Arc::<str>::from("a")]);
        assert_eq!(&*sub.receiver.recv().await.unwrap(), "b");
        live.close(1);
        drop(channel);
        assert!(
            sub.receiver.recv().await.is_err(),
            "the stream ends with the run"
        );
        assert!(live.subscribe(1).is_none());
    }

    #[test]
    fn a_long_run_keeps_its_newest_log_lines_and_every_other_event() {
        let live = Live::default();
        let channel = live.open(1);
        channel.send("started".into(), false);
        let line: Arc<str> = "x".repeat(1000).into();
        for _ in 0..5000 {
            channel.send(line.clone(), true);
        }
        channel.send("finished".into(), false);
        let sub = live.subscribe(1).unwrap();
        let kept: usize = sub.history.iter().map(|e| e.len()).sum();
        assert!(kept <= HISTORY_LOG_BYTES + 100, "{kept} bytes kept");
        assert_eq!(
            sub.history.len() - 2 + sub.dropped,
            5000,
            "every line kept or counted"
        );
        assert_eq!(&*sub.history[0], "started");
        assert_eq!(&**sub.history.last().unwrap(), "finished");
    }

    #[test]
    fn a_run_has_at_most_its_viewers_and_a_leaving_one_frees_a_place() {
        let live = Live::default();
        let mut places: Vec<Viewer> = (0..MAX_VIEWERS).map(|_| live.view(1).unwrap()).collect();
        assert!(live.view(1).is_none());
        assert!(live.view(2).is_some(), "another run's viewers count apart");
        places.pop();
        assert!(live.view(1).is_some());
        drop(places);
        let everyone: Vec<Viewer> = (0..MAX_ALL_VIEWERS as i64)
            .map(|n| live.view(n / 8).unwrap())
            .collect();
        assert!(
            live.view(1000).is_none(),
            "all runs' viewers have a bound too"
        );
        drop(everyone);
        assert_eq!(
            lock(&live.viewers).len(),
            0,
            "nothing is kept for runs nobody views"
        );
    }
}
