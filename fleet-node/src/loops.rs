//! The long-running tasks of a node (change-log compaction, event expiry, watchers,
//! the device hub's writers), tracked so that a stop ends them and waits for them:
//! nothing a node starts runs detached.

use std::future::Future;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A node's long-running tasks, and the word that stops them.
#[derive(Clone, Default)]
pub struct Loops {
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Loops {
    /// Runs `work` until it returns or the loops stop. A loop stopped this way is
    /// dropped at the await it waits on, so it must leave nothing half-done across an
    /// await that a transaction's rollback does not undo.
    pub fn spawn<F>(&self, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                () = work => {}
            }
        });
    }

    /// Runs `work`, which ends by itself: on [`Loops::stopping`], or on a stop of
    /// its own. A stop waits for it.
    pub fn track<F>(&self, work: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.tasks.spawn(work);
    }

    /// Cancelled when the loops stop, for a task that finishes its work cleanly
    /// (writes what it holds) before it returns.
    pub fn stopping(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Stops every loop and waits until each has ended.
    pub async fn stop(&self) {
        self.stop.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }

    /// The tasks still running.
    pub fn running(&self) -> usize {
        self.tasks.len()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;

    #[tokio::test]
    async fn a_stop_ends_endless_loops_and_waits_for_tasks_that_finish_cleanly() {
        let loops = Loops::default();
        loops.spawn(std::future::pending());
        let flushed = Arc::new(AtomicBool::new(false));
        loops.track({
            let (stopping, flushed) = (loops.stopping(), flushed.clone());
            async move {
                stopping.cancelled().await;
                tokio::task::yield_now().await;
                flushed.store(true, Ordering::SeqCst);
            }
        });
        assert_eq!(loops.running(), 2);
        loops.stop().await;
        assert_eq!(loops.running(), 0);
        assert!(
            flushed.load(Ordering::SeqCst),
            "the stop waited for the flush"
        );
    }
}
