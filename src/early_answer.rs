//! A server that answers before it is asked: a netcat responder or a tiny embedded server
//! writes its HTTP answer as soon as a connection opens, without waiting for the request.
//! hyper refuses bytes that arrive before its request ("received unexpected message"), so
//! such a server reads as `protocol_error` on some probes and `ok` on others, depending on
//! which side wins the race. curl writes its request and then reads what came: [`ask`] does
//! the same, once, on a new connection whose reads wait until the request has started to go
//! out.
//!
//! The same connection tells one more thing hyper does not: whether a server that closed or
//! reset the connection before a complete head had begun an answer ([`Recorded`]).

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// What a connection read: how many bytes, and the first [`Recorded::KEPT`] of them.
#[derive(Debug, Default)]
pub(crate) struct Seen {
    pub count: usize,
    pub first: Vec<u8>,
}

/// A connection that records what it reads.
pub(crate) struct Recorded<S> {
    inner: S,
    seen: Arc<Mutex<Seen>>,
}

impl<S> Recorded<S> {
    /// Enough of a head to show where it was cut.
    pub(crate) const KEPT: usize = 64;

    pub(crate) fn new(inner: S, seen: Arc<Mutex<Seen>>) -> Self {
        Recorded { inner, seen }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Recorded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        let new = &buf.filled()[before..];
        if !new.is_empty()
            && let Ok(mut seen) = self.seen.lock()
        {
            seen.count += new.len();
            let room = Self::KEPT.saturating_sub(seen.first.len());
            seen.first.extend_from_slice(&new[..new.len().min(room)]);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Recorded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// A connection whose reads wait for its first write: what the server sent before the
/// request is read after it, as the answer to it.
pub(crate) struct HeldReads<S> {
    inner: S,
    written: bool,
    reader: Option<Waker>,
}

impl<S> HeldReads<S> {
    pub(crate) fn new(inner: S) -> Self {
        HeldReads {
            inner,
            written: false,
            reader: None,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HeldReads<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.written {
            // Woken by the first write.
            self.reader = Some(cx.waker().clone());
            return Poll::Pending;
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HeldReads<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) && !self.written {
            self.written = true;
            if let Some(reader) = self.reader.take() {
                reader.wake();
            }
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Send `request` on `stream` (a new connection to the server that answered early) as the
/// client would, with `user_agent`, and read the answer after it. The caller bounds the time;
/// the body is read by whoever judges the response, as for any other.
pub(crate) async fn ask<S>(
    stream: S,
    request: reqwest::Request,
    user_agent: &str,
) -> Result<reqwest::Response, BoxError>
where
    S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let url = request.url().clone();
    let mut req: http::Request<reqwest::Body> = request.try_into()?;
    // On a connection of its own a request names its path (origin form) and its host in
    // `Host`, as the client sends it; the client's default User-Agent is added here.
    let target = match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    };
    *req.uri_mut() = target.parse()?;
    let host = match (url.host_str(), url.port()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_string(),
        (None, _) => return Err("the URL has no host".into()),
    };
    let headers = req.headers_mut();
    if !headers.contains_key(http::header::HOST) {
        headers.insert(http::header::HOST, host.parse()?);
    }
    if !headers.contains_key(http::header::USER_AGENT) {
        headers.insert(http::header::USER_AGENT, user_agent.parse()?);
    }
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        // Read heads as the client does (see `build_client`).
        .max_headers(1000)
        .allow_spaces_after_header_name_in_responses(true)
        .allow_obsolete_multiline_headers_in_responses(true)
        .ignore_invalid_headers_in_responses(true)
        .handshake(hyper_util::rt::TokioIo::new(HeldReads::new(stream)))
        .await?;
    // The connection is driven while the body is read; it ends when the response is dropped.
    tokio::spawn(conn);
    let resp = sender.send_request(req).await?;
    let (parts, body) = resp.into_parts();
    let mut builder = http::Response::builder()
        .status(parts.status)
        .version(parts.version);
    if let Some(h) = builder.headers_mut() {
        *h = parts.headers;
    }
    use reqwest::ResponseBuilderExt;
    let resp = builder.url(url).body(reqwest::Body::wrap(body))?;
    Ok(reqwest::Response::from(resp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// What the server sent first is not read until the request has been written; then it is.
    #[tokio::test]
    async fn reads_wait_for_the_first_write() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        theirs.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        let mut held = HeldReads::new(ours);
        let mut buf = [0u8; 64];
        use futures_util::FutureExt;
        let early = held.read(&mut buf).now_or_never();
        assert!(early.is_none(), "read before any write: {early:?}");
        held.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let n = held.read(&mut buf).await.unwrap();
        assert_eq!(&buf[..n], b"HTTP/1.1 200 OK\r\n");
        let mut sent = [0u8; 64];
        let n = theirs.read(&mut sent).await.unwrap();
        assert_eq!(&sent[..n], b"GET / HTTP/1.1\r\n\r\n");
    }

    /// A recorded connection counts every byte it reads and keeps the first few.
    #[tokio::test]
    async fn a_recorded_connection_counts_what_it_reads_and_keeps_its_start() {
        let (ours, mut theirs) = tokio::io::duplex(4096);
        let seen = Arc::new(Mutex::new(Seen::default()));
        let mut rec = Recorded::new(ours, seen.clone());
        let long = vec![b'x'; 100];
        theirs.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        theirs.write_all(&long).await.unwrap();
        drop(theirs);
        let mut all = Vec::new();
        rec.read_to_end(&mut all).await.unwrap();
        let seen = seen.lock().unwrap();
        assert_eq!(seen.count, 17 + 100);
        assert_eq!(seen.first.len(), Recorded::<()>::KEPT);
        assert!(seen.first.starts_with(b"HTTP/1.1 200 OK\r\nxx"));
    }

    /// A reader parked before the write is woken by it (the connection task polls reads first).
    #[tokio::test]
    async fn a_parked_read_is_woken_by_the_write() {
        let (ours, mut theirs) = tokio::io::duplex(1024);
        theirs.write_all(b"early").await.unwrap();
        let (mut r, mut w) = tokio::io::split(HeldReads::new(ours));
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 16];
            let n = r.read(&mut buf).await.unwrap();
            buf[..n].to_vec()
        });
        tokio::task::yield_now().await;
        assert!(!reader.is_finished());
        w.write_all(b"x").await.unwrap();
        assert_eq!(reader.await.unwrap(), b"early");
    }
}
