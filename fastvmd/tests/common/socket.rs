//! A client of a test daemon's local socket: one JSON frame per line,
//! answers matched to requests by id.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use serde_json::{Value, json};

use super::daemon::Daemon;

/// One connection to `fastvmd.sock`.
pub struct Conn {
    pub writer: UnixStream,
    pub reader: BufReader<UnixStream>,
    next: u64,
}

impl Conn {
    /// Connects to `d`'s socket; a read waits at most `timeout`.
    pub fn open(d: &Daemon, timeout: Duration) -> Conn {
        let s = UnixStream::connect(d.data_dir.join("fastvmd.sock")).expect("fastvmd.sock");
        s.set_read_timeout(Some(timeout)).unwrap();
        Conn {
            writer: s.try_clone().unwrap(),
            reader: BufReader::new(s),
            next: 1,
        }
    }

    /// Sends `frame` with the next id; returns the id.
    pub fn send(&mut self, frame: Value) -> u64 {
        let id = self.next;
        self.next += 1;
        let mut frame = frame;
        frame["id"] = json!(id);
        let mut line = frame.to_string();
        line.push('\n');
        self.writer.write_all(line.as_bytes()).unwrap();
        id
    }

    /// The next frame, whatever it is.
    pub fn read(&mut self) -> Value {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("a frame");
        serde_json::from_str(&line).expect("a JSON frame")
    }

    /// Sends and waits for the answer with the same id: (status, body).
    pub fn call(&mut self, frame: Value) -> (u16, Value) {
        let id = self.send(frame);
        loop {
            let answer = self.read();
            if answer["id"] == id && answer.get("status").is_some() {
                return (
                    answer["status"].as_u64().unwrap() as u16,
                    answer["body"].clone(),
                );
            }
        }
    }
}
