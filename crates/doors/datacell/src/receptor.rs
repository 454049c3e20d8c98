//! Receptors: a task per receptor that fills its basket from sensors' CSV lines.
//!
//! - Passive TCP (the default): listens on the port; any number of sensors connect.
//! - Passive UDP: listens for datagrams, each holding one or more lines.
//! - Active TCP: connects to a sensor that serves events (`sensor --server`), retrying every
//!   second.
//!
//! A line that does not parse goes to the basket's errors with the reason, as does a line
//! longer than [`MAX_LINE`] (dropped whole) or one that is not UTF-8; the rest of the input is
//! not affected. Parsed rows go into the basket in chunks of up to [`CHUNK_ROWS`].

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use streamcell_csv::LineParser;
use streamcell_engine::datacell::adapter::Adapter;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Notify;

use crate::RETRY;

/// Lines longer than this are refused (and counted as errors).
pub const MAX_LINE: usize = 64 * 1024;
/// Rows parsed before they are appended to the basket in one piece.
pub const CHUNK_ROWS: usize = 4096;

/// Parses lines into the basket: whole chunks are appended at once.
struct Filler {
    adapter: Arc<Adapter>,
    parser: LineParser,
    wake: Arc<Notify>,
}

impl Filler {
    fn new(adapter: Arc<Adapter>, wake: Arc<Notify>) -> Self {
        let parser = LineParser::new(&adapter.spec.basket.schema);
        Filler {
            adapter,
            parser,
            wake,
        }
    }

    fn line(&mut self, line: &str) {
        if line.is_empty() || line.starts_with('#') {
            // `#N` batch headers (and blank lines) carry no event.
            return;
        }
        if let Err(bad) = self.parser.push_line(line) {
            // "<reason>: <line>"
            self.adapter.reject(bad.to_string());
        }
        if self.parser.rows() >= CHUNK_ROWS {
            self.flush();
        }
    }

    fn flush(&mut self) {
        let n = self.parser.rows();
        if n == 0 {
            return;
        }
        match self.parser.finish() {
            Ok(batch) => match self.adapter.spec.basket.append(batch) {
                Ok(()) => {
                    self.adapter.counted(n);
                    self.wake.notify_one();
                }
                Err(e) => {
                    self.adapter.rejected.fetch_add(n as u64, Ordering::Relaxed);
                    self.adapter.spec.basket.add_error(e.to_string());
                }
            },
            Err(e) => self.adapter.note(format!("cannot build rows: {e}")),
        }
    }
}

pub(crate) async fn receive_tcp_passive(a: Arc<Adapter>, listener: TcpListener, wake: Arc<Notify>) {
    loop {
        if !a.running().await {
            return;
        }
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = a.stopped() => return,
        };
        match accepted {
            Ok((stream, _)) => {
                tokio::spawn(read_lines(a.clone(), stream, wake.clone()));
            }
            Err(e) => {
                a.note(format!("accept failed: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

pub(crate) async fn receive_tcp_active(a: Arc<Adapter>, addr: SocketAddr, wake: Arc<Notify>) {
    loop {
        if !a.running().await {
            return;
        }
        match TcpStream::connect(addr).await {
            Ok(stream) => read_lines(a.clone(), stream, wake.clone()).await,
            Err(e) => {
                a.note(format!("cannot connect to sensor {addr}: {e}; retrying"));
                tokio::select! {
                    _ = tokio::time::sleep(RETRY) => {}
                    _ = a.stopped() => return,
                }
            }
        }
    }
}

/// Reads `\n`-terminated lines from one sensor until it closes (a last line without `\n`
/// counts too).
async fn read_lines(a: Arc<Adapter>, stream: TcpStream, wake: Arc<Notify>) {
    let _ = stream.set_nodelay(true);
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut filler = Filler::new(a.clone(), wake);
    let mut buf: Vec<u8> = Vec::with_capacity(256);
    // Set after a line over MAX_LINE was rejected: the rest of it, up to its newline, is
    // dropped too (none of it is a line of its own).
    let mut skipping = false;
    loop {
        if !a.running().await {
            filler.flush();
            return;
        }
        // Parse whatever is buffered without waiting; wait only when nothing is.
        let available = match reader.buffer().is_empty() {
            true => {
                filler.flush();
                tokio::select! {
                    r = reader.fill_buf() => r.map(|b| b.len()),
                    _ = a.stopped() => return,
                }
            }
            false => Ok(reader.buffer().len()),
        };
        match available {
            Ok(0) => {
                if !buf.is_empty() && !skipping {
                    line_of(&mut filler, &buf);
                }
                filler.flush();
                return;
            }
            Ok(_) => {}
            Err(e) => {
                filler.flush();
                a.note(format!("sensor connection failed: {e}"));
                return;
            }
        }
        let chunk = reader.buffer();
        let mut consumed = 0;
        for piece in chunk.split_inclusive(|&b| b == b'\n') {
            consumed += piece.len();
            let ends_line = piece.last() == Some(&b'\n');
            let body = if ends_line {
                &piece[..piece.len() - 1]
            } else {
                piece
            };
            if skipping {
                // The tail of a rejected line: dropped up to and including its newline.
                skipping = !ends_line;
                continue;
            }
            if buf.len() + body.len() > MAX_LINE {
                buf.extend_from_slice(&body[..body.len().min(64)]);
                a.reject(format!(
                    "line longer than {MAX_LINE} bytes (dropped whole): {}…",
                    String::from_utf8_lossy(&buf[..buf.len().min(64)])
                ));
                buf.clear();
                skipping = !ends_line;
                continue;
            }
            if !ends_line {
                buf.extend_from_slice(body);
            } else if buf.is_empty() {
                line_of(&mut filler, body);
            } else {
                buf.extend_from_slice(body);
                line_of(&mut filler, &buf);
                buf.clear();
            }
        }
        reader.consume(consumed);
    }
}

fn line_of(filler: &mut Filler, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(line) => filler.line(line),
        Err(_) => filler.adapter.reject(format!(
            "not UTF-8: {}",
            String::from_utf8_lossy(&bytes[..bytes.len().min(1024)])
        )),
    }
}

pub(crate) async fn receive_udp(a: Arc<Adapter>, socket: UdpSocket, wake: Arc<Notify>) {
    let mut filler = Filler::new(a.clone(), wake);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        if !a.running().await {
            return;
        }
        let got = tokio::select! {
            r = socket.recv_from(&mut buf) => r,
            _ = a.stopped() => return,
        };
        match got {
            Ok((n, _)) => {
                for line in buf[..n].split(|&b| b == b'\n') {
                    if !line.is_empty() {
                        line_of(&mut filler, line);
                    }
                }
                filler.flush();
            }
            Err(e) => a.note(format!("receive failed: {e}")),
        }
    }
}
