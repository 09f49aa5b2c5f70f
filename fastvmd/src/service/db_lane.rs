//! The service's quick blocking work — SQLite, and local checks that take
//! microseconds — on a small fixed set of threads of its own, apart from
//! the work that waits on a monitor (`Service::blocking`). However many
//! requests arrive at once, this work adds no thread: jobs queue (up to
//! [`QUEUE`] submitted at a time; later submitters wait their turn without
//! a thread), and a burst of slow monitor calls cannot take the threads
//! that authenticate and look up every other request.

use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};

use tokio::sync::{Semaphore, oneshot};

/// Threads running store work. The store has one SQLite connection behind
/// a mutex, so more would only wait on it; two keep one job running while
/// another finishes its non-SQLite part.
pub const THREADS: usize = 2;

/// Jobs submitted and not yet finished, at most.
pub const QUEUE: usize = 1024;

type Job = Box<dyn FnOnce() + Send>;

/// The threads and their queue. Dropping it lets the threads end once the
/// queue is empty.
pub struct DbLane {
    jobs: Mutex<Sender<Job>>,
    room: Arc<Semaphore>,
}

/// Why a job did not run.
#[derive(Debug, thiserror::Error)]
pub enum LaneError {
    /// The lane's threads are gone (the daemon is stopping).
    #[error("the store's threads have stopped")]
    Stopped,
    /// The job panicked.
    #[error("a store job failed unexpectedly")]
    Panicked,
}

impl DbLane {
    /// Starts [`THREADS`] threads named `fastvmd-db`.
    pub fn start() -> std::io::Result<DbLane> {
        let (jobs, queue) = std::sync::mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for n in 0..THREADS {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name(format!("fastvmd-db{n}"))
                .spawn(move || serve_jobs(&queue))?;
        }
        Ok(DbLane {
            jobs: Mutex::new(jobs),
            room: Arc::new(Semaphore::new(QUEUE)),
        })
    }

    /// Runs `job` on one of the lane's threads and returns what it returned.
    pub async fn run<T, F>(&self, job: F) -> Result<T, LaneError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let permit = self
            .room
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| LaneError::Stopped)?;
        let (answer, answered) = oneshot::channel();
        let wrapped: Job = Box::new(move || {
            let _permit = permit;
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
            let _ = answer.send(result);
        });
        self.jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(wrapped)
            .map_err(|_| LaneError::Stopped)?;
        match answered.await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(_)) => Err(LaneError::Panicked),
            Err(_) => Err(LaneError::Stopped),
        }
    }
}

/// One lane thread: takes jobs until every sender is gone.
fn serve_jobs(queue: &Mutex<Receiver<Job>>) {
    loop {
        let next = queue.lock().unwrap_or_else(|e| e.into_inner()).recv();
        match next {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::time::Duration;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn many_jobs_at_once_run_on_the_lanes_threads_only() {
        runtime().block_on(async {
            let lane = Arc::new(DbLane::start().unwrap());
            let names = (0..200).map(|_| {
                let lane = lane.clone();
                tokio::spawn(async move {
                    lane.run(|| {
                        std::thread::sleep(Duration::from_micros(200));
                        std::thread::current().name().unwrap_or("").to_string()
                    })
                    .await
                    .unwrap()
                })
            });
            let mut seen = HashSet::new();
            for name in names.collect::<Vec<_>>() {
                seen.insert(name.await.unwrap());
            }
            assert!(seen.iter().all(|n| n.starts_with("fastvmd-db")), "{seen:?}");
            assert!(seen.len() <= THREADS, "{seen:?}");
        });
    }

    #[test]
    fn a_panicking_job_is_an_error_and_the_lane_goes_on() {
        runtime().block_on(async {
            let lane = DbLane::start().unwrap();
            for _ in 0..THREADS + 1 {
                let failed = lane.run(|| -> u32 { panic!("on purpose") }).await;
                assert!(matches!(failed, Err(LaneError::Panicked)), "{failed:?}");
            }
            assert_eq!(lane.run(|| 7).await.unwrap(), 7);
        });
    }
}
