//! Compression of event streams (docs/api.md, "Compression"). Whole answers (views, history, lists, the OpenAPI
//! document, backups) are compressed by the router's compression layer; a stream cannot be, because a general
//! compressor holds its input until it has a block's worth, and a consumer would wait for events already committed.
//! Streams are compressed here instead: every piece the producer sends (a batch of events, or a heartbeat) is written
//! to the encoder and flushed (gzip's sync flush, brotli's flush), so what the client has received always decodes
//! to every event sent so far. A bounded stream (`to`, `limit`) ends with the format's trailer.

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::http::{header, Extensions, HeaderMap, StatusCode, Version};
use futures_util::stream::{BoxStream, Stream, StreamExt};
use tower_http::compression::predicate::{DefaultPredicate, Predicate};

/// Marks a response as a stream this module encodes itself: the router's compression layer leaves it alone.
#[derive(Clone, Copy, Debug)]
pub struct Streamed;

/// The router's compression layer for whole answers: gzip or brotli as `Accept-Encoding` prefers, for bodies of
/// more than 32 bytes, never for streams (see the module's documentation).
pub fn compression() -> tower_http::compression::CompressionLayer<impl Predicate> {
    let not_streamed = |_: StatusCode, _: Version, _: &HeaderMap, extensions: &Extensions| {
        extensions.get::<Streamed>().is_none()
    };
    tower_http::compression::CompressionLayer::new()
        .compress_when(DefaultPredicate::new().and(not_streamed))
}

/// A content coding the server produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Coding {
    Identity,
    Gzip,
    Brotli,
}

impl Coding {
    /// The `Content-Encoding` value, `None` for identity.
    pub fn header(self) -> Option<&'static str> {
        match self {
            Coding::Identity => None,
            Coding::Gzip => Some("gzip"),
            Coding::Brotli => Some("br"),
        }
    }
}

/// The coding `Accept-Encoding` prefers: the highest q among `br` and `gzip` (`*` stands for whichever is not
/// named; brotli on a tie); identity when neither is acceptable or the header is absent.
pub fn negotiate(headers: &HeaderMap) -> Coding {
    let (mut gzip, mut br, mut star) = (None::<f32>, None::<f32>, None::<f32>);
    for value in headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for item in value.split(',') {
            let mut parts = item.split(';');
            let name = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q=").map(str::trim))
                .find_map(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            match name.as_str() {
                "gzip" | "x-gzip" => gzip = Some(q),
                "br" => br = Some(q),
                "*" => star = Some(q),
                _ => {}
            }
        }
    }
    let gzip = gzip.or(star).unwrap_or(0.0);
    let br = br.or(star).unwrap_or(0.0);
    if br > 0.0 && br >= gzip {
        Coding::Brotli
    } else if gzip > 0.0 {
        Coding::Gzip
    } else {
        Coding::Identity
    }
}

/// A sink the brotli writer owns while the stream takes what it wrote.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Shared {
    fn take(&self) -> Vec<u8> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

enum Encoder {
    Gzip(flate2::write::GzEncoder<Vec<u8>>),
    Brotli(Box<brotli::CompressorWriter<Shared>>, Shared),
}

impl Encoder {
    fn new(coding: Coding) -> Option<Encoder> {
        match coding {
            Coding::Identity => None,
            Coding::Gzip => Some(Encoder::Gzip(flate2::write::GzEncoder::new(
                Vec::new(),
                flate2::Compression::default(),
            ))),
            Coding::Brotli => {
                let sink = Shared::default();
                // Quality 5 and a 4 MiB window: most of brotli's gain on JSON at a fraction of its top quality's cost.
                let writer = brotli::CompressorWriter::new(sink.clone(), 16 * 1024, 5, 22);
                Some(Encoder::Brotli(Box::new(writer), sink))
            }
        }
    }

    /// Compresses `piece` and flushes, returning every byte the encoder produced.
    fn piece(&mut self, piece: &[u8]) -> std::io::Result<Bytes> {
        match self {
            Encoder::Gzip(e) => {
                e.write_all(piece)?;
                e.flush()?;
                Ok(Bytes::from(std::mem::take(e.get_mut())))
            }
            Encoder::Brotli(e, sink) => {
                e.write_all(piece)?;
                e.flush()?;
                Ok(Bytes::from(sink.take()))
            }
        }
    }

    /// Ends the compressed stream: its last bytes and trailer.
    fn finish(self) -> std::io::Result<Bytes> {
        match self {
            Encoder::Gzip(e) => Ok(Bytes::from(e.finish()?)),
            Encoder::Brotli(e, sink) => {
                drop(e.into_inner());
                Ok(Bytes::from(sink.take()))
            }
        }
    }
}

/// A streamed answer: `pieces` encoded as the request's `Accept-Encoding` prefers, each flushed as it is sent, with
/// `headers` (content type, caching) and `Vary: Accept-Encoding`; marked [`Streamed`] for the compression layer.
pub fn streamed<S>(
    request: &HeaderMap,
    headers: &[(header::HeaderName, &'static str)],
    pieces: S,
) -> axum::response::Response
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    let coding = negotiate(request);
    let body = encode_stream(coding, pieces).map(Ok::<Bytes, std::convert::Infallible>);
    let mut response = axum::response::Response::new(axum::body::Body::from_stream(body));
    let h = response.headers_mut();
    for (name, value) in headers {
        h.append(name, header::HeaderValue::from_static(value));
    }
    h.append(
        header::VARY,
        header::HeaderValue::from_static("accept-encoding"),
    );
    if let Some(name) = coding.header() {
        h.insert(
            header::CONTENT_ENCODING,
            header::HeaderValue::from_static(name),
        );
    }
    response.extensions_mut().insert(Streamed);
    response
}

/// `body` encoded with `coding`, flushed after every piece.
pub fn encode_stream<S>(coding: Coding, body: S) -> BoxStream<'static, Bytes>
where
    S: Stream<Item = Bytes> + Send + 'static,
{
    let Some(encoder) = Encoder::new(coding) else {
        return body.boxed();
    };
    futures_util::stream::unfold(
        (body.boxed(), Some(encoder)),
        |(mut body, encoder)| async move {
            let mut encoder = encoder?;
            let out = match body.next().await {
                Some(piece) => encoder.piece(&piece).map(|b| (b, Some(encoder))),
                None => encoder.finish().map(|b| (b, None)),
            };
            match out {
                Ok((bytes, rest)) => Some((bytes, (body, rest))),
                Err(e) => {
                    // Writing to memory does not fail; if it ever did, the stream ends rather than send garbage.
                    tracing::error!(error = %e, "compressing a stream failed; the stream ends");
                    None
                }
            }
        },
    )
    .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use std::io::Read;

    fn accepting(v: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT_ENCODING, HeaderValue::from_str(v).unwrap());
        h
    }

    #[test]
    fn accept_encoding_is_negotiated_with_q_values() {
        assert_eq!(negotiate(&HeaderMap::new()), Coding::Identity);
        assert_eq!(negotiate(&accepting("gzip")), Coding::Gzip);
        assert_eq!(negotiate(&accepting("gzip, br")), Coding::Brotli);
        assert_eq!(negotiate(&accepting("br;q=0.5, gzip")), Coding::Gzip);
        assert_eq!(negotiate(&accepting("br;q=0, gzip;q=0")), Coding::Identity);
        assert_eq!(negotiate(&accepting("*")), Coding::Brotli);
        assert_eq!(negotiate(&accepting("*;q=0.3, br;q=0.1")), Coding::Gzip);
        assert_eq!(negotiate(&accepting("deflate, identity")), Coding::Identity);
    }

    /// Every piece decodes as soon as it is sent, before the stream ends: the property a live consumer needs.
    #[tokio::test]
    async fn each_piece_decodes_on_arrival_and_the_end_completes_the_stream() {
        let pieces: Vec<Bytes> = (0..3)
            .map(|i| Bytes::from(format!("{{\"position\":{i}}}\n")))
            .collect();
        for coding in [Coding::Gzip, Coding::Brotli] {
            let mut out = encode_stream(coding, futures_util::stream::iter(pieces.clone()));
            let mut received = Vec::new();
            for (i, _) in pieces.iter().enumerate() {
                received.extend_from_slice(&out.next().await.unwrap());
                let expected: Vec<u8> = pieces[..=i].concat();
                let mut decoded = vec![0u8; expected.len()];
                match coding {
                    Coding::Gzip => flate2::read::GzDecoder::new(&received[..])
                        .read_exact(&mut decoded)
                        .unwrap(),
                    _ => brotli::Decompressor::new(&received[..], 4096)
                        .read_exact(&mut decoded)
                        .unwrap(),
                }
                assert_eq!(decoded, expected, "{coding:?} after piece {i}");
            }
            received.extend_from_slice(&out.next().await.unwrap());
            assert!(out.next().await.is_none());
            let mut whole = Vec::new();
            match coding {
                Coding::Gzip => flate2::read::GzDecoder::new(&received[..])
                    .read_to_end(&mut whole)
                    .unwrap(),
                _ => brotli::Decompressor::new(&received[..], 4096)
                    .read_to_end(&mut whole)
                    .unwrap(),
            };
            assert_eq!(whole, pieces.concat(), "{coding:?} whole");
        }
    }
}
