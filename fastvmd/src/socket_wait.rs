//! Connecting to a Unix socket that a starting process is about to create,
//! without polling: the directory is watched with inotify, so the waiter
//! sleeps until something appears in it instead of taking a core from the
//! process it waits for. Closing an inotify instance waits for an SRCU
//! grace period (often 10-20 ms), so one thread closes them all, off the
//! waiter's path.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::sync::mpsc::{Sender, channel};
use std::time::{Duration, Instant};

use inotify::{Inotify, WatchMask};

/// Longest sleep between two connection attempts: the socket file appears
/// at `bind`, a moment before it accepts, and the watch says nothing then.
const RETRY: Duration = Duration::from_millis(2);

/// A watch on a directory, made before the process that fills it starts.
pub struct SocketWatch {
    /// Always `Some` until dropped.
    inotify: Option<Inotify>,
    dir: PathBuf,
}

impl Drop for SocketWatch {
    fn drop(&mut self) {
        static CLOSER: OnceLock<Option<Sender<Inotify>>> = OnceLock::new();
        let closer = CLOSER.get_or_init(|| {
            let (tx, rx) = channel::<Inotify>();
            std::thread::Builder::new()
                .name("inotify-close".into())
                .spawn(move || rx.into_iter().for_each(drop))
                .ok()
                .map(|_| tx)
        });
        if let (Some(closer), Some(inotify)) = (closer, self.inotify.take()) {
            // If the closer is gone, the instance comes back and closes here.
            let _ = closer.send(inotify);
        }
    }
}

impl SocketWatch {
    /// Watches `dir`, which must exist, for new entries.
    pub fn new(dir: &Path) -> io::Result<SocketWatch> {
        let inotify = Inotify::init()?;
        inotify
            .watches()
            .add(dir, WatchMask::CREATE | WatchMask::MOVED_TO)?;
        Ok(SocketWatch {
            inotify: Some(inotify),
            dir: dir.to_path_buf(),
        })
    }

    /// Connects to `name` in the directory once it accepts. Between tries
    /// it sleeps until an entry appears (at most [`RETRY`]); it gives up at
    /// `deadline`, or when `gone` says why the creator will never make it.
    pub fn connect(
        &mut self,
        name: &str,
        deadline: Instant,
        mut gone: impl FnMut() -> Option<String>,
    ) -> Result<UnixStream, String> {
        let path = self.dir.join(name);
        let mut events = [0u8; 1024];
        loop {
            if let Ok(stream) = UnixStream::connect(&path) {
                return Ok(stream);
            }
            if let Some(why) = gone() {
                return Err(why);
            }
            let now = Instant::now();
            if now > deadline {
                return Err(format!("{} did not appear in time", path.display()));
            }
            self.sleep((deadline - now).min(RETRY));
            // Drain what woke us; which entry it was does not matter.
            if let Some(inotify) = self.inotify.as_mut() {
                while inotify
                    .read_events(&mut events)
                    .is_ok_and(|mut e| e.next().is_some())
                {}
            }
        }
    }

    /// Sleeps until the watch has an event or `timeout` passes.
    fn sleep(&self, timeout: Duration) {
        let Some(inotify) = &self.inotify else {
            return;
        };
        let mut fd = libc::pollfd {
            fd: inotify.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32;
        // SAFETY: polls one valid pollfd owned by this frame.
        unsafe { libc::poll(&mut fd, 1, ms) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn connects_to_a_socket_bound_after_the_watch_started() {
        let tmp = tempfile::tempdir().unwrap();
        let mut watch = SocketWatch::new(tmp.path()).unwrap();
        let path = tmp.path().join("late.sock");
        let binder = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            let listener = UnixListener::bind(&path).unwrap();
            listener.accept().unwrap()
        });
        let started = Instant::now();
        let stream = watch.connect("late.sock", started + Duration::from_secs(5), || None);
        assert!(stream.is_ok(), "{stream:?}");
        assert!(started.elapsed() >= Duration::from_millis(50));
        binder.join().unwrap();
    }

    fn open_inotify_instances() -> usize {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| target.to_string_lossy().contains("inotify"))
            .count()
    }

    #[test]
    fn dropped_watches_are_closed_by_the_closer_thread() {
        let tmp = tempfile::tempdir().unwrap();
        let watches: Vec<_> = (0..20)
            .map(|_| SocketWatch::new(tmp.path()).unwrap())
            .collect();
        assert!(open_inotify_instances() >= 20);
        drop(watches);
        let deadline = Instant::now() + Duration::from_secs(30);
        // Other tests in this process may hold a few of their own.
        while open_inotify_instances() >= 20 {
            assert!(Instant::now() < deadline, "dropped watches stay open");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    #[test]
    fn gives_up_when_told_or_at_the_deadline() {
        let tmp = tempfile::tempdir().unwrap();
        let mut watch = SocketWatch::new(tmp.path()).unwrap();
        let soon = Instant::now() + Duration::from_secs(5);
        let err = watch.connect("never.sock", soon, || Some("exited".into()));
        assert_eq!(err.unwrap_err(), "exited");
        let started = Instant::now();
        let err = watch.connect("never.sock", started + Duration::from_millis(30), || None);
        assert!(err.unwrap_err().contains("did not appear"));
        assert!(started.elapsed() >= Duration::from_millis(30));
    }
}
