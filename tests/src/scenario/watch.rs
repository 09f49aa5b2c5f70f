//! A `watch` on the daemon's socket, kept in a thread, recording every VM
//! status it reports; reconnects when the daemon restarts.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

/// At most this many events are kept (the scenario sees a few hundred).
const MAX_EVENTS: usize = 100_000;

/// (VM id, status) pairs in the order `watch` reported them.
#[derive(Clone, Default)]
pub struct Watch {
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

impl Watch {
    /// Watches the socket at `path` until the process ends.
    pub fn start(path: PathBuf) -> Watch {
        let watch = Watch::default();
        let seen = watch.seen.clone();
        std::thread::spawn(move || {
            loop {
                if let Ok(stream) = UnixStream::connect(&path) {
                    follow(stream, &seen);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        watch
    }

    /// Every status reported for VM `id`.
    pub fn statuses(&self, id: &str) -> Vec<String> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.iter()
            .filter(|(vm, _)| vm == id)
            .map(|(_, s)| s.clone())
            .collect()
    }

    /// Every (VM, status) with status `error`.
    pub fn errors(&self) -> Vec<String> {
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        seen.iter()
            .filter(|(_, s)| s == "error")
            .map(|(vm, _)| vm.clone())
            .collect()
    }
}

fn follow(mut stream: UnixStream, seen: &Mutex<Vec<(String, String)>>) {
    if writeln!(
        stream,
        r#"{{"id":1,"op":"watch","body":{{"events":["vm"]}}}}"#
    )
    .is_err()
    {
        return;
    }
    for line in BufReader::new(stream).lines() {
        let Ok(line) = line else { return };
        let Ok(frame) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        let data = &frame["data"];
        if let (Some(id), Some(status)) = (data["id"].as_str(), data["status"].as_str()) {
            let mut seen = seen.lock().unwrap_or_else(|e| e.into_inner());
            if seen.len() < MAX_EVENTS {
                seen.push((id.to_string(), status.to_string()));
            }
        }
    }
}
