//! Host side of the guest agent protocol: reach the agent through a
//! monitor's `vsock.sock` (Firecracker's `CONNECT <port>` handshake), then
//! ping it or run commands, blocking (benchmarks and tests; the daemon
//! speaks it on tokio, [`crate::agent_async`]).

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use fastvm_proto::agent::{
    self, AGENT_PORT, Decoder, ExecRequest, ExecResult, Frame, HEADER_LEN, Ready,
};

pub use fastvm_proto::agent::TIMEOUT_EXIT_CODE;

/// How long past an exec's timeout the host still waits for the agent's own
/// timed-out result (which keeps the output so far): the agent stops the
/// command with SIGTERM and SIGKILL 500 ms later, then answers.
pub const RESULT_GRACE: Duration = Duration::from_secs(1);

/// Why talking to the agent failed.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The vsock socket could not be reached or the stream broke.
    #[error("vsock: {0}")]
    Io(#[from] io::Error),
    /// The monitor closed the connection: nothing listens on the port yet.
    #[error("no agent listening on vsock port {0}")]
    NoListener(u32),
    /// The monitor answered the handshake with something other than `OK`.
    #[error("vsock handshake refused: {0:?}")]
    Handshake(String),
    /// The agent sent a malformed frame or one out of turn.
    #[error("agent protocol: {0}")]
    Protocol(String),
    /// No answer within the deadline.
    #[error("agent did not answer within {0:?}")]
    Timeout(Duration),
    /// The agent speaks a protocol without streams.
    #[error(
        "the VM's guest agent speaks protocol {0}, which has no streaming exec, files or forwards; \
         a VM booted from an image built by this fastvmd has one that does"
    )]
    TooOld(u16),
}

impl From<agent::FrameError> for AgentError {
    fn from(e: agent::FrameError) -> Self {
        AgentError::Protocol(e.to_string())
    }
}

/// The agent's answer to a setting it was sent (clock, network).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// It took the setting.
    Yes,
    /// It answered that it cannot, in these words.
    Refused(String),
}

/// One connection to the agent.
pub struct AgentConn {
    stream: UnixStream,
    decoder: Decoder,
    ready: Ready,
    nonce: u64,
}

/// Does the `CONNECT <port>` handshake on a fresh `vsock.sock` connection.
pub fn vsock_connect(
    vsock_path: &Path,
    port: u32,
    timeout: Duration,
) -> Result<UnixStream, AgentError> {
    let mut stream = UnixStream::connect(vsock_path)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(format!("CONNECT {port}\n").as_bytes())?;
    let mut line = Vec::with_capacity(32);
    let mut byte = [0u8; 1];
    while line.last() != Some(&b'\n') {
        match stream.read(&mut byte) {
            Ok(0) => return Err(AgentError::NoListener(port)),
            Ok(_) => line.push(byte[0]),
            Err(e) if is_timeout(&e) => return Err(AgentError::Timeout(timeout)),
            Err(e) => return Err(e.into()),
        }
        if line.len() > MAX_HANDSHAKE {
            break;
        }
    }
    check_handshake(&line)?;
    Ok(stream)
}

/// Longest handshake answer read (`OK <port>\n`).
pub(crate) const MAX_HANDSHAKE: usize = 64;

/// The monitor's answer to `CONNECT`: `OK ...`, or why not.
pub(crate) fn check_handshake(line: &[u8]) -> Result<(), AgentError> {
    let text = String::from_utf8_lossy(line).trim_end().to_string();
    if text.starts_with("OK ") {
        Ok(())
    } else {
        Err(AgentError::Handshake(text))
    }
}

/// The agent hung up, with `decoder` holding part of a frame (or none).
pub(crate) fn closed_mid_frame(decoder: &Decoder) -> AgentError {
    AgentError::Io(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!(
            "agent closed the connection ({} of a frame pending)",
            decoder.pending().min(HEADER_LEN)
        ),
    ))
}

/// `request` as sent to the agent: exec `id`, with the host's `timeout`.
pub(crate) fn exec_frame(request: &ExecRequest, id: u64, timeout: Duration) -> Frame {
    let mut request = request.clone();
    request.timeout_ms = Some(timeout.as_millis() as u64);
    request.id = id;
    Frame::Exec(request)
}

/// The agent's answer to exec `id`: its result, or why that is not it.
pub(crate) fn exec_answer(frame: Frame, id: u64) -> Result<ExecResult, AgentError> {
    match frame {
        Frame::ExecResult(result) if result.id == id => Ok(result),
        Frame::Error { message } => Err(AgentError::Protocol(message)),
        other => Err(AgentError::Protocol(format!(
            "expected the result of exec {id}, got {}",
            other.describe()
        ))),
    }
}

/// What an exec that outlived its deadline reports: `timed_out`, no output.
pub(crate) fn timed_out(elapsed: Duration) -> ExecResult {
    ExecResult {
        exit_code: TIMEOUT_EXIT_CODE,
        timed_out: true,
        duration_ms: elapsed.as_millis() as u64,
        ..ExecResult::default()
    }
}

fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

impl AgentConn {
    /// Connects to the agent and waits for its `ready` frame.
    pub fn connect(vsock_path: &Path, timeout: Duration) -> Result<AgentConn, AgentError> {
        let stream = vsock_connect(vsock_path, AGENT_PORT, timeout)?;
        let mut conn = AgentConn {
            stream,
            decoder: Decoder::new(),
            ready: Ready {
                version: 0,
                agent: String::new(),
            },
            nonce: 0,
        };
        match conn.read_frame(Instant::now() + timeout)? {
            Frame::Ready(ready) => conn.ready = ready,
            other => {
                return Err(AgentError::Protocol(format!(
                    "expected ready, got {}",
                    other.describe()
                )));
            }
        }
        Ok(conn)
    }

    /// Ok when this connection is served by the monitor holding VM
    /// directory `dir` ([`crate::supervisor::peer`]).
    pub fn ensure_monitor(&self, dir: &Path) -> std::io::Result<()> {
        crate::supervisor::peer::ensure_monitor(&self.stream, dir)
    }

    /// Retries [`AgentConn::connect`] until the agent listens or `deadline` passes.
    pub fn connect_when_ready(
        vsock_path: &Path,
        deadline: Instant,
    ) -> Result<AgentConn, AgentError> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match AgentConn::connect(vsock_path, left.max(Duration::from_millis(50))) {
                Ok(conn) => return Ok(conn),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => std::thread::sleep(Duration::from_micros(500)),
            }
        }
    }

    /// What the agent said about itself.
    pub fn ready(&self) -> &Ready {
        &self.ready
    }

    fn send(&mut self, frame: &Frame) -> Result<(), AgentError> {
        let bytes = agent::encode(frame)?;
        self.stream.write_all(&bytes)?;
        Ok(())
    }

    fn read_frame(&mut self, deadline: Instant) -> Result<Frame, AgentError> {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(frame);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(AgentError::Timeout(Duration::ZERO));
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.stream.read(&mut buf) {
                Ok(0) => return Err(closed_mid_frame(&self.decoder)),
                Ok(n) => self.decoder.push(&buf[..n]),
                Err(e) if is_timeout(&e) => return Err(AgentError::Timeout(left)),
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sends a ping and waits for the matching pong.
    pub fn ping(&mut self, timeout: Duration) -> Result<Duration, AgentError> {
        let start = Instant::now();
        self.nonce += 1;
        let nonce = self.nonce;
        self.send(&Frame::Ping { nonce })?;
        match self.read_frame(start + timeout)? {
            Frame::Pong { nonce: n } if n == nonce => Ok(start.elapsed()),
            other => Err(AgentError::Protocol(format!(
                "expected pong {nonce}, got {}",
                other.describe()
            ))),
        }
    }

    /// Runs a command with `timeout`, which the agent enforces: its result
    /// then has `timed_out` set and the output so far. An agent that has not
    /// answered [`RESULT_GRACE`] after the timeout is given up on: the
    /// connection is closed (the agent then kills the command) and a result
    /// with `timed_out` set and no output is returned.
    pub fn exec(
        mut self,
        request: &ExecRequest,
        timeout: Duration,
    ) -> Result<(ExecResult, Option<AgentConn>), AgentError> {
        let start = Instant::now();
        self.nonce += 1;
        let id = self.nonce;
        self.send(&exec_frame(request, id, timeout))?;
        match self.read_frame(start + timeout + RESULT_GRACE) {
            Ok(frame) => Ok((exec_answer(frame, id)?, Some(self))),
            Err(AgentError::Timeout(_)) => {
                let _ = self.stream.shutdown(std::net::Shutdown::Both);
                Ok((timed_out(start.elapsed()), None))
            }
            Err(e) => Err(e),
        }
    }
}
