//! The agent protocol on tokio, as the daemon speaks it: a request or a
//! starting VM waits on its guest (for as long as a command runs, or the
//! agent takes to come up) without holding a thread. The frames are decoded
//! by the same sans-IO [`Decoder`] as [`crate::agent::AgentConn`]'s, with
//! the same bounds.

use std::path::Path;
use std::time::Duration;

use fastvm_proto::agent::{self, AGENT_PORT, Decoder, ExecRequest, ExecResult, Frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::time::Instant;

use crate::agent::{
    AgentError, Applied, MAX_HANDSHAKE, RESULT_GRACE, check_handshake, closed_mid_frame,
    exec_answer, exec_frame, timed_out,
};

/// One connection to the agent, past its `ready` frame.
pub struct AsyncAgentConn {
    stream: UnixStream,
    decoder: Decoder,
    nonce: u64,
    /// The protocol version the agent announced in its `ready`.
    version: u16,
}

/// Does the `CONNECT <port>` handshake on a fresh `vsock.sock` connection.
async fn vsock_connect(path: &Path, port: u32) -> Result<UnixStream, AgentError> {
    let mut stream = UnixStream::connect(path).await?;
    stream
        .write_all(format!("CONNECT {port}\n").as_bytes())
        .await?;
    let mut line = Vec::with_capacity(32);
    let mut byte = [0u8; 1];
    while line.last() != Some(&b'\n') && line.len() <= MAX_HANDSHAKE {
        if stream.read(&mut byte).await? == 0 {
            return Err(AgentError::NoListener(port));
        }
        line.push(byte[0]);
    }
    check_handshake(&line)?;
    Ok(stream)
}

impl AsyncAgentConn {
    /// Connects to the agent behind `vsock_path` and waits for its `ready`
    /// frame, retrying until the agent listens or `deadline` passes.
    pub async fn connect_when_ready(
        vsock_path: &Path,
        deadline: Instant,
    ) -> Result<AsyncAgentConn, AgentError> {
        loop {
            let attempt = tokio::time::timeout_at(deadline, AsyncAgentConn::connect(vsock_path));
            match attempt.await {
                Ok(Ok(conn)) => return Ok(conn),
                Ok(Err(e)) if Instant::now() >= deadline => return Err(e),
                Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(1)).await,
                Err(_) => return Err(AgentError::Timeout(Duration::ZERO)),
            }
        }
    }

    async fn connect(vsock_path: &Path) -> Result<AsyncAgentConn, AgentError> {
        let stream = vsock_connect(vsock_path, AGENT_PORT).await?;
        let mut conn = AsyncAgentConn {
            stream,
            decoder: Decoder::new(),
            nonce: 0,
            version: 0,
        };
        match conn.read_frame().await? {
            Frame::Ready(ready) => {
                conn.version = ready.version;
                Ok(conn)
            }
            other => Err(AgentError::Protocol(format!(
                "expected ready, got {}",
                other.describe()
            ))),
        }
    }

    /// The connection as a stream's ([`crate::agent_stream`]); refused when
    /// the agent does not speak streams.
    pub fn into_stream(self) -> Result<crate::agent_stream::AgentStream, AgentError> {
        if self.version < agent::STREAMS_VERSION {
            return Err(AgentError::TooOld(self.version));
        }
        Ok(crate::agent_stream::AgentStream::new(
            self.stream,
            self.decoder,
        ))
    }

    /// Ok when this connection is served by the monitor holding VM
    /// directory `dir` ([`crate::supervisor::peer`]).
    pub fn ensure_monitor(&self, dir: &Path) -> std::io::Result<()> {
        crate::supervisor::peer::ensure_monitor(&self.stream, dir)
    }

    async fn read_frame(&mut self) -> Result<Frame, AgentError> {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            if let Some(frame) = self.decoder.next_frame()? {
                return Ok(frame);
            }
            match self.stream.read(&mut buf).await? {
                0 => return Err(closed_mid_frame(&self.decoder)),
                n => self.decoder.push(&buf[..n]),
            }
        }
    }

    /// The next frame, or [`AgentError::Timeout`] at `deadline`.
    async fn read_frame_by(&mut self, deadline: Instant) -> Result<Frame, AgentError> {
        let started = Instant::now();
        tokio::time::timeout_at(deadline, self.read_frame())
            .await
            .unwrap_or(Err(AgentError::Timeout(deadline - started)))
    }

    async fn send(&mut self, frame: &Frame) -> Result<(), AgentError> {
        let bytes = agent::encode(frame)?;
        self.stream.write_all(&bytes).await?;
        Ok(())
    }

    fn next_nonce(&mut self) -> u64 {
        self.nonce += 1;
        self.nonce
    }

    /// Sends a ping and waits up to `timeout` for the matching pong.
    pub async fn ping(&mut self, timeout: Duration) -> Result<Duration, AgentError> {
        let start = Instant::now();
        let nonce = self.next_nonce();
        self.send(&Frame::Ping { nonce }).await?;
        match self.read_frame_by(start + timeout).await? {
            Frame::Pong { nonce: n } if n == nonce => Ok(start.elapsed()),
            other => Err(AgentError::Protocol(format!(
                "expected pong {nonce}, got {}",
                other.describe()
            ))),
        }
    }

    /// Sets the guest's wall clock to `now`. [`Applied::Refused`] when the
    /// agent answers that it cannot (the test guest has no clock to set).
    pub async fn set_clock(
        &mut self,
        now: std::time::SystemTime,
        timeout: Duration,
    ) -> Result<Applied, AgentError> {
        let unix_ms = now
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let nonce = self.next_nonce();
        self.setting(Frame::SetClock { nonce, unix_ms }, nonce, timeout)
            .await
    }

    /// Tells the guest its network (MAC, IPv6 address with prefix length,
    /// gateway, and IPv4 address with prefix length and gateway when it has
    /// one). [`Applied::Refused`] when the agent answers that it cannot
    /// (the test guest reads its address from the command line and its MAC).
    pub async fn set_network(
        &mut self,
        mac: &str,
        ip6: &str,
        gw6: &str,
        ipv4: Option<(String, String)>,
        timeout: Duration,
    ) -> Result<Applied, AgentError> {
        let nonce = self.next_nonce();
        let (ip4, gw4) = ipv4.unzip();
        let frame = Frame::SetNetwork {
            nonce,
            mac: mac.into(),
            ip6: ip6.into(),
            gw6: gw6.into(),
            ip4,
            gw4,
        };
        self.setting(frame, nonce, timeout).await
    }

    /// Sends a setting and reads its answer: a pong with its nonce, or an
    /// error frame saying why not.
    async fn setting(
        &mut self,
        frame: Frame,
        nonce: u64,
        timeout: Duration,
    ) -> Result<Applied, AgentError> {
        let deadline = Instant::now() + timeout;
        self.send(&frame).await?;
        match self.read_frame_by(deadline).await? {
            Frame::Pong { nonce: n } if n == nonce => Ok(Applied::Yes),
            Frame::Error { message } => Ok(Applied::Refused(message)),
            other => Err(AgentError::Protocol(format!(
                "expected pong {nonce}, got {}",
                other.describe()
            ))),
        }
    }

    /// Runs `request` for at most `timeout`; on the deadline the connection
    /// is closed (the agent then kills the command) and a result with
    /// `timed_out` set and no output is returned.
    pub async fn exec(
        mut self,
        request: &ExecRequest,
        timeout: Duration,
    ) -> Result<ExecResult, AgentError> {
        let start = Instant::now();
        let id = self.next_nonce();
        self.send(&exec_frame(request, id, timeout)).await?;
        let deadline = start + timeout + RESULT_GRACE;
        match tokio::time::timeout_at(deadline, self.read_frame()).await {
            Ok(Ok(frame)) => exec_answer(frame, id),
            Ok(Err(e)) => Err(e),
            Err(_) => {
                let _ = self.stream.shutdown().await;
                Ok(timed_out(start.elapsed()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fastvm_proto::agent::{PROTOCOL_VERSION, Ready};
    use tokio::io::{AsyncBufReadExt, BufReader};
    use tokio::net::UnixListener;

    /// A fake agent behind a `CONNECT` handshake that answers the first
    /// exec with a result for exec `answer_id`.
    async fn fake_agent(listener: UnixListener, answer_id: Option<u64>) {
        let (stream, _) = listener.accept().await.unwrap();
        let mut stream = BufReader::new(stream);
        let mut line = String::new();
        stream.read_line(&mut line).await.unwrap();
        assert_eq!(line, format!("CONNECT {AGENT_PORT}\n"));
        let ready = Frame::Ready(Ready {
            version: PROTOCOL_VERSION,
            agent: "fake".into(),
        });
        let mut out = b"OK 1\n".to_vec();
        out.extend(agent::encode(&ready).unwrap());
        stream.get_mut().write_all(&out).await.unwrap();
        let mut decoder = Decoder::new();
        let mut buf = vec![0u8; 4096];
        let request = loop {
            if let Some(Frame::Exec(req)) = decoder.next_frame().unwrap() {
                break req;
            }
            let n = stream.read(&mut buf).await.unwrap();
            decoder.push(&buf[..n]);
        };
        let result = ExecResult {
            id: answer_id.unwrap_or(request.id),
            stdout: "done\n".into(),
            ..ExecResult::default()
        };
        let bytes = agent::encode(&Frame::ExecResult(result)).unwrap();
        stream.get_mut().write_all(&bytes).await.unwrap();
    }

    async fn exec_against(answer_id: Option<u64>) -> Result<ExecResult, AgentError> {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("vsock.sock");
        let agent = tokio::spawn(fake_agent(UnixListener::bind(&path).unwrap(), answer_id));
        let deadline = Instant::now() + Duration::from_secs(5);
        let conn = AsyncAgentConn::connect_when_ready(&path, deadline).await?;
        let result = conn
            .exec(&ExecRequest::new(["true"]), Duration::from_secs(5))
            .await;
        agent.await.unwrap();
        result
    }

    #[tokio::test]
    async fn an_exec_is_answered_by_the_result_with_its_id() {
        let result = exec_against(None).await.unwrap();
        assert_eq!((result.id, result.stdout.as_str()), (1, "done\n"));
    }

    #[tokio::test]
    async fn a_result_for_another_exec_is_a_protocol_error() {
        let err = exec_against(Some(99)).await.unwrap_err().to_string();
        assert!(
            err.contains("expected the result of exec 1, got the result of exec 99"),
            "{err}"
        );
    }
}
