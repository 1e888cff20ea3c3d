//! The blocking client for ipamd's socket: one [`Request`] out, one
//! [`Response`] back, on a fresh connection per call.
//!
//! Every failure maps to a CNI error the runtime can act on: anything that
//! suggests ipamd is not (yet) there or too slow is code 11
//! ([`TRY_AGAIN_LATER`]), which kubelet retries; an answer that cannot be
//! read is code 106 ([`BAD_DAEMON_ANSWER`]).

use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::error::{CniError, BAD_DAEMON_ANSWER, INTERNAL, TRY_AGAIN_LATER};
use crate::wire::{Request, Response, MAX_FRAME_BYTES};

/// How much of a garbled answer goes into the error's details.
const SNIPPET_BYTES: usize = 200;

/// Sends `request` to ipamd at `socket` and returns the `result` of a
/// [`Response::Ok`]. A [`Response::Error`] is returned as is; transport
/// failures become code 11 or 106. `timeout` bounds the whole call.
///
/// ```no_run
/// use std::path::Path;
/// use std::time::Duration;
/// use cni_plugin::client::call;
/// use cni_plugin::wire::{Command, PodArgs, Request, PROTOCOL_VERSION};
///
/// let req = Request {
///     v: PROTOCOL_VERSION,
///     command: Command::Status,
///     container_id: String::new(),
///     netns: String::new(),
///     ifname: String::new(),
///     args: PodArgs::default(),
///     config: serde_json::json!({"cniVersion": "1.1.0", "name": "vpc"}),
/// };
/// let result = call(Path::new("/run/vpc-cni/ipamd.sock"), &req, Duration::from_secs(10));
/// ```
pub fn call(socket: &Path, request: &Request, timeout: Duration) -> Result<Value, CniError> {
    let deadline = Instant::now() + timeout;
    let frame = serde_json::to_vec(request).map_err(|e| {
        // Only a non-string map key could get here, which `Request` has not.
        CniError::new(INTERNAL, "could not encode the request for ipamd")
            .with_details(e.to_string())
    })?;
    let mut stream = connect(socket, timeout)?;
    send(&mut stream, &frame, socket, deadline, timeout)?;
    let answer = receive(&mut stream, socket, deadline, timeout)?;
    match decode_response(&answer)? {
        Response::Ok { result } => Ok(result),
        Response::Error(e) => Err(e),
    }
}

/// Connects. A connect to a Unix socket returns at once: refused when
/// nobody listens, accepted into the backlog otherwise. It would block only
/// with ipamd alive but its accept loop wedged *and* 1 024 connections
/// already queued; the runtime's own timeout (containerd kills a plugin
/// whose context expires) bounds that case. A helper thread with a timeout
/// would cost every call ≈ 50 µs to cover it.
fn connect(socket: &Path, _timeout: Duration) -> Result<UnixStream, CniError> {
    UnixStream::connect(socket).map_err(|e| not_reachable(socket, &e))
}

fn send(
    stream: &mut UnixStream,
    frame: &[u8],
    socket: &Path,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), CniError> {
    let remaining = remaining(deadline).ok_or_else(|| did_not_answer(socket, timeout))?;
    let sent = stream
        .set_write_timeout(Some(remaining))
        .and_then(|()| stream.write_all(frame))
        // EOF on our write half is the end-of-request marker.
        .and_then(|()| stream.shutdown(Shutdown::Write));
    sent.map_err(|e| {
        if is_timeout(&e) {
            did_not_answer(socket, timeout)
        } else {
            // ipamd closed the connection before reading the request, e.g.
            // because it is shutting down; a retry will find the new one.
            CniError::new(
                TRY_AGAIN_LATER,
                format!(
                    "lost the connection to ipamd at {} while sending the request: {e}",
                    socket.display()
                ),
            )
        }
    })
}

fn receive(
    stream: &mut UnixStream,
    socket: &Path,
    deadline: Instant,
    timeout: Duration,
) -> Result<Vec<u8>, CniError> {
    let mut answer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        // The timeout is reset before every read so that a daemon that
        // trickles bytes cannot stretch the call past the deadline.
        let remaining = remaining(deadline).ok_or_else(|| did_not_answer(socket, timeout))?;
        if let Err(e) = stream.set_read_timeout(Some(remaining)) {
            return Err(
                bad_answer("could not set a read timeout on the ipamd socket")
                    .with_details(e.to_string()),
            );
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(answer),
            Ok(n) => {
                answer.extend_from_slice(&chunk[..n]);
                if answer.len() > MAX_FRAME_BYTES {
                    return Err(bad_answer(format!(
                        "ipamd's answer is larger than {MAX_FRAME_BYTES} bytes"
                    )));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => return Err(did_not_answer(socket, timeout)),
            Err(e) => {
                return Err(bad_answer(format!(
                    "reading ipamd's answer from {} failed: {e}",
                    socket.display()
                )))
            }
        }
    }
}

/// Parses one answer frame; anything but a well-formed [`Response`] is
/// code 106.
pub fn decode_response(answer: &[u8]) -> Result<Response, CniError> {
    if answer.iter().all(u8::is_ascii_whitespace) {
        return Err(bad_answer("ipamd closed the connection without answering")
            .with_details("see ipamd's log for the request"));
    }
    serde_json::from_slice(answer).map_err(|e| {
        let end = answer.len().min(SNIPPET_BYTES);
        bad_answer("ipamd's answer is not a valid response").with_details(format!(
            "{e}; answer starts with {:?}",
            String::from_utf8_lossy(&answer[..end])
        ))
    })
}

fn remaining(deadline: Instant) -> Option<Duration> {
    Some(deadline.saturating_duration_since(Instant::now())).filter(|d| !d.is_zero())
}

/// A timed-out socket read reports `WouldBlock` on Unix and `TimedOut`
/// elsewhere; both mean the same here.
fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

fn not_reachable(socket: &Path, e: &io::Error) -> CniError {
    CniError::new(
        TRY_AGAIN_LATER,
        format!(
            "ipamd is not reachable at {}: {e}; is the ipamd DaemonSet running on this node?",
            socket.display()
        ),
    )
}

fn did_not_answer(socket: &Path, timeout: Duration) -> CniError {
    CniError::new(
        TRY_AGAIN_LATER,
        format!(
            "ipamd at {} did not answer within {} ms",
            socket.display(),
            timeout.as_millis()
        ),
    )
}

fn bad_answer(msg: impl Into<String>) -> CniError {
    CniError::new(BAD_DAEMON_ANSWER, msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{reply, FakeDaemon, TempDir};
    use crate::wire::{Command, PodArgs, PROTOCOL_VERSION};
    use serde_json::json;

    fn request() -> Request {
        Request {
            v: PROTOCOL_VERSION,
            command: Command::Add,
            container_id: "c1".into(),
            netns: "/proc/42/ns/net".into(),
            ifname: "eth0".into(),
            args: PodArgs {
                name: Some("web-0".into()),
                ..PodArgs::default()
            },
            config: json!({"cniVersion": "1.1.0", "name": "vpc"}),
        }
    }

    const SECOND: Duration = Duration::from_secs(5);

    #[test]
    fn round_trip_ok() {
        let daemon = FakeDaemon::answering(
            Response::Ok {
                result: json!({"ok": true}),
            },
            |req| {
                assert_eq!(req, request());
            },
        );
        assert_eq!(
            call(&daemon.socket, &request(), SECOND).unwrap(),
            json!({"ok": true})
        );
        daemon.join().unwrap();
    }

    #[test]
    fn daemon_error_is_returned_as_is() {
        let err = CniError::new(101, "pool exhausted").with_details("14 of 14 addresses in use");
        let daemon = FakeDaemon::answering(Response::Error(err.clone()), |_| {});
        assert_eq!(call(&daemon.socket, &request(), SECOND).unwrap_err(), err);
        daemon.join().unwrap();
    }

    #[test]
    fn missing_socket_is_code_11_naming_the_path() {
        let dir = TempDir::new();
        let socket = dir.socket();
        let err = call(&socket, &request(), SECOND).unwrap_err();
        assert_eq!(err.code, TRY_AGAIN_LATER);
        assert!(
            err.msg.contains(&socket.display().to_string()),
            "{}",
            err.msg
        );
        assert!(
            err.msg.contains("is the ipamd DaemonSet running"),
            "{}",
            err.msg
        );
    }

    #[test]
    fn stale_socket_is_code_11() {
        let dir = TempDir::new();
        let socket = dir.socket();
        drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
        assert!(socket.exists());
        let err = call(&socket, &request(), SECOND).unwrap_err();
        assert_eq!(err.code, TRY_AGAIN_LATER);
        assert!(
            err.msg.contains(&socket.display().to_string()),
            "{}",
            err.msg
        );
        assert!(err.msg.contains("refused"), "{}", err.msg);
    }

    #[test]
    fn path_that_is_not_a_socket_is_code_11() {
        let dir = TempDir::new();
        let err = call(dir.path(), &request(), SECOND).unwrap_err();
        assert_eq!(err.code, TRY_AGAIN_LATER);
        assert!(err.msg.contains(&dir.path().display().to_string()));
    }

    #[test]
    fn silent_daemon_times_out_with_code_11() {
        let daemon = FakeDaemon::serve_once(|_, stream| {
            std::thread::sleep(Duration::from_millis(600));
            drop(stream);
        });
        // Without the timeout the call would end when the daemon closes,
        // with a different error (106): code 11 and the message prove it fired.
        let err = call(&daemon.socket, &request(), Duration::from_millis(150)).unwrap_err();
        assert_eq!(err.code, TRY_AGAIN_LATER);
        assert!(
            err.msg.contains("did not answer within 150 ms"),
            "{}",
            err.msg
        );
        assert!(err.msg.contains(&daemon.socket.display().to_string()));
        daemon.join().unwrap();
    }

    #[test]
    fn trickling_daemon_cannot_stretch_the_deadline() {
        let daemon = FakeDaemon::serve_once(|_, mut stream| {
            for _ in 0..20 {
                if stream.write_all(b" ").is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let err = call(&daemon.socket, &request(), Duration::from_millis(200)).unwrap_err();
        assert_eq!(err.code, TRY_AGAIN_LATER, "{err}");
        daemon.join().unwrap();
    }

    #[test]
    fn closing_without_answer_is_106() {
        let daemon = FakeDaemon::serve_once(|_, stream| drop(stream));
        let err = call(&daemon.socket, &request(), SECOND).unwrap_err();
        assert_eq!(err.code, BAD_DAEMON_ANSWER);
        assert!(err.msg.contains("without answering"), "{}", err.msg);
        daemon.join().unwrap();
    }

    #[test]
    fn garbage_answer_is_106() {
        let daemon =
            FakeDaemon::serve_once(|_, stream| reply(stream, b"HTTP/1.1 400 Bad Request\r\n"));
        let err = call(&daemon.socket, &request(), SECOND).unwrap_err();
        assert_eq!(err.code, BAD_DAEMON_ANSWER);
        assert!(err.details.contains("HTTP/1.1 400"), "{}", err.details);
        daemon.join().unwrap();
    }

    #[test]
    fn oversized_answer_is_106() {
        let daemon =
            FakeDaemon::serve_once(|_, stream| reply(stream, &vec![b' '; MAX_FRAME_BYTES + 10]));
        let err = call(&daemon.socket, &request(), SECOND).unwrap_err();
        assert_eq!(err.code, BAD_DAEMON_ANSWER);
        assert!(err.msg.contains("larger than"), "{}", err.msg);
        daemon.join().unwrap();
    }

    #[test]
    fn answer_of_exactly_the_limit_is_read() {
        let mut frame = serde_json::to_vec(&Response::Ok { result: json!(1) }).unwrap();
        frame.resize(MAX_FRAME_BYTES, b' ');
        let daemon = FakeDaemon::serve_once(move |_, stream| reply(stream, &frame));
        assert_eq!(call(&daemon.socket, &request(), SECOND).unwrap(), json!(1));
        daemon.join().unwrap();
    }

    #[test]
    fn decode_response_cases() {
        assert_eq!(decode_response(b"").unwrap_err().code, BAD_DAEMON_ANSWER);
        assert_eq!(decode_response(b" \n").unwrap_err().code, BAD_DAEMON_ANSWER);
        assert_eq!(
            decode_response(b"{\"ok\":").unwrap_err().code,
            BAD_DAEMON_ANSWER
        );
        assert_eq!(
            decode_response(b"{\"other\":{}}").unwrap_err().code,
            BAD_DAEMON_ANSWER
        );
        assert_eq!(
            decode_response(br#"{"ok":{"result":{}}}"#).unwrap(),
            Response::Ok { result: json!({}) }
        );
        let long = vec![b'x'; 5000];
        assert!(decode_response(&long).unwrap_err().details.len() < 600);
    }
}
