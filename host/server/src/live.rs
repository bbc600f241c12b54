//! Events of running runs, for the dashboard's live view: each run keeps what it said so
//! far, so a viewer who opens the page late sees everything, then new events as they come.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

/// Events waiting for a slow viewer before it is told it missed some.
const BACKLOG: usize = 4096;

#[derive(Default)]
pub struct Live {
    runs: Mutex<HashMap<i64, Arc<Channel>>>,
}

pub struct Channel {
    history: Mutex<Vec<Arc<str>>>,
    sender: broadcast::Sender<Arc<str>>,
}

/// A viewer's start: what was said before it came, and what comes next.
pub struct Subscription {
    pub history: Vec<Arc<str>>,
    pub receiver: broadcast::Receiver<Arc<str>>,
}

impl Live {
    /// Starts the channel of a run that is about to run.
    pub fn open(&self, run: i64) -> Arc<Channel> {
        let channel = Arc::new(Channel {
            history: Mutex::new(Vec::new()),
            sender: broadcast::channel(BACKLOG).0,
        });
        lock(&self.runs).insert(run, channel.clone());
        channel
    }

    /// Ends a run's channel: viewers see their stream end once they have read it.
    pub fn close(&self, run: i64) {
        lock(&self.runs).remove(&run);
    }

    /// `None` when the run is not running here: its events are on disk.
    pub fn subscribe(&self, run: i64) -> Option<Subscription> {
        let channel = lock(&self.runs).get(&run)?.clone();
        // Holding the history while subscribing means no event falls between the two.
        let history = lock(&channel.history);
        Some(Subscription {
            receiver: channel.sender.subscribe(),
            history: history.clone(),
        })
    }
}

impl Channel {
    pub fn send(&self, event: Arc<str>) {
        let mut history = lock(&self.history);
        history.push(event.clone());
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
        channel.send("a".into());
        let mut sub = live.subscribe(1).unwrap();
        channel.send("b".into());
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
}
