//! The console: guest serial output is kept in a ring buffer and sent to
//! every client of `console.sock`; what clients write goes to the UART.
//! A new client first receives the recent output. The service loop
//! ([`crate::service`]) accepts clients and reads their input.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::bus::lock;
use super::devices::serial::SerialDevice;

/// Bytes of recent output replayed to a new client.
pub const RING_CAPACITY: usize = 256 << 10;
/// A client that cannot take output for this long is disconnected.
const CLIENT_WRITE_TIMEOUT: Duration = Duration::from_millis(200);
/// Clients one console serves at once; one more is told so and closed.
pub const MAX_CLIENTS: usize = 16;
/// What a client past [`MAX_CLIENTS`] reads before its connection closes.
pub const TOO_MANY_CLIENTS: &str =
    "fastvmd: this console has 16 clients already; try again later\r\n";

/// Recent output plus the connected clients.
#[derive(Default)]
pub struct ConsoleHub {
    inner: Mutex<HubInner>,
}

#[derive(Default)]
struct HubInner {
    ring: VecDeque<u8>,
    /// Each with the id [`ConsoleHub::attach`] gave it.
    clients: Vec<(u64, UnixStream)>,
    next_id: u64,
}

impl ConsoleHub {
    /// An empty hub.
    pub fn new() -> Arc<Self> {
        Arc::new(ConsoleHub::default())
    }

    /// Records guest output and forwards it to every client; drops clients
    /// that are gone or too slow.
    pub fn output(&self, bytes: &[u8]) {
        let mut inner = lock(&self.inner);
        if bytes.len() >= RING_CAPACITY {
            inner.ring.clear();
            inner.ring.extend(&bytes[bytes.len() - RING_CAPACITY..]);
        } else {
            let overflow = (inner.ring.len() + bytes.len()).saturating_sub(RING_CAPACITY);
            inner.ring.drain(..overflow);
            inner.ring.extend(bytes);
        }
        inner
            .clients
            .retain_mut(|(_, c)| c.write_all(bytes).is_ok());
    }

    /// The recent output, oldest first.
    pub fn recent(&self) -> Vec<u8> {
        let inner = lock(&self.inner);
        inner.ring.iter().copied().collect()
    }

    /// Sends the recent output to `client`, then adds it to the broadcast
    /// list; its id, for [`ConsoleHub::detach`]. With [`MAX_CLIENTS`]
    /// already there, `client` is told so and refused (`Ok(None)`).
    pub fn attach(&self, mut client: UnixStream) -> io::Result<Option<u64>> {
        client.set_write_timeout(Some(CLIENT_WRITE_TIMEOUT))?;
        let mut inner = lock(&self.inner);
        if inner.clients.len() >= MAX_CLIENTS {
            client.write_all(TOO_MANY_CLIENTS.as_bytes())?;
            return Ok(None);
        }
        let (a, b) = inner.ring.as_slices();
        client.write_all(a)?;
        client.write_all(b)?;
        let id = inner.next_id;
        inner.next_id += 1;
        inner.clients.push((id, client));
        Ok(Some(id))
    }

    /// Forgets client `id` (it went away).
    pub fn detach(&self, id: u64) {
        lock(&self.inner).clients.retain(|(c, _)| *c != id);
    }

    /// Number of connected clients.
    pub fn client_count(&self) -> usize {
        lock(&self.inner).clients.len()
    }
}

/// `Write` end handed to the UART.
pub struct ConsoleOut(pub Arc<ConsoleHub>);

impl Write for ConsoleOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.output(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The UART as the console input side sees it.
pub type ConsoleSerial = Arc<Mutex<SerialDevice<ConsoleOut>>>;

/// What a running VM's console holds: connects to its console socket in
/// `vm_dir` (the monitor replays its recent output to a new client) and
/// reads for a moment, at most [`RING_CAPACITY`] bytes. For diagnostics;
/// empty when the console cannot be reached.
pub fn history(vm_dir: &std::path::Path) -> String {
    let path = vm_dir.join(crate::machine::CONSOLE_SOCKET);
    let Ok(mut stream) = UnixStream::connect(path) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(300)));
    let mut buf = vec![0u8; RING_CAPACITY];
    let mut len = 0;
    while len < buf.len() {
        match stream.read(&mut buf[len..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => len += n,
        }
    }
    String::from_utf8_lossy(&buf[..len]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn ring_keeps_the_newest_bytes() {
        let hub = ConsoleHub::new();
        hub.output(&vec![b'a'; RING_CAPACITY]);
        hub.output(b"xyz");
        let recent = hub.recent();
        assert_eq!(recent.len(), RING_CAPACITY);
        assert_eq!(&recent[recent.len() - 3..], b"xyz");
        hub.output(&vec![b'b'; RING_CAPACITY + 5]);
        assert!(hub.recent().iter().all(|b| *b == b'b'));
    }

    #[test]
    fn new_client_gets_history_then_live_output() {
        let hub = ConsoleHub::new();
        hub.output(b"before ");
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        hub.attach(ours).unwrap();
        hub.output(b"after");
        let mut got = vec![0u8; 12];
        theirs.read_exact(&mut got).unwrap();
        assert_eq!(got, b"before after");
        drop(theirs);
        hub.output(b"x");
        hub.output(b"y");
        assert_eq!(hub.client_count(), 0, "closed client is dropped");
    }

    #[test]
    fn clients_past_the_cap_are_told_and_refused_until_one_leaves() {
        assert!(TOO_MANY_CLIENTS.contains(&MAX_CLIENTS.to_string()));
        let hub = ConsoleHub::new();
        let mut kept = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..MAX_CLIENTS {
            let (ours, theirs) = UnixStream::pair().unwrap();
            ids.push(hub.attach(ours).unwrap().expect("under the cap"));
            kept.push(theirs);
        }
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        assert_eq!(hub.attach(ours).unwrap(), None);
        let mut said = String::new();
        theirs.read_to_string(&mut said).unwrap();
        assert_eq!(said, TOO_MANY_CLIENTS, "told why, then closed");
        assert_eq!(hub.client_count(), MAX_CLIENTS);

        hub.detach(ids[3]);
        let (ours, _theirs) = UnixStream::pair().unwrap();
        assert!(hub.attach(ours).unwrap().is_some(), "room again");
    }
}
