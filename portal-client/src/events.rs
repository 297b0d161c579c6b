//! Reading `GET /v1/events`: a Server-Sent Events parser (the WHATWG `text/event-stream`
//! rules: `id`, `event`, `data` and `retry` fields, comments, a blank line dispatching, any
//! of CRLF, LF or CR ending a line) and the stream of [`Event`]s on it.
//!
//! [`EventStream::last_event_id`] is the id to reconnect with (`Last-Event-ID`), so a client
//! that reconnects loses and repeats nothing.

use protocol::api::Event;

use crate::error::ClientError;

/// The longest event accepted, in bytes (an event is well under 4 KiB).
const MAX_EVENT_BYTES: usize = 1 << 20;

/// One dispatched Server-Sent Event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RawEvent {
    /// Its `id:`, if it had one.
    pub id: Option<String>,
    /// Its `event:` (`message` when absent).
    pub event: String,
    /// Its `data:` lines, joined by newlines.
    pub data: String,
}

/// A `text/event-stream` parser: feed it bytes, take the events it completes.
#[derive(Debug, Default)]
pub struct Parser {
    line: Vec<u8>,
    /// The last byte fed was a CR (a following LF belongs to it).
    after_cr: bool,
    id: Option<String>,
    event: Option<String>,
    data: Option<String>,
    size: usize,
}

impl Parser {
    /// Feeds `bytes`; returns the events they complete, in order.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<RawEvent>, String> {
        let mut out = Vec::new();
        for &b in bytes {
            if self.after_cr && b == b'\n' {
                self.after_cr = false;
                continue;
            }
            self.after_cr = b == b'\r';
            if b == b'\n' || b == b'\r' {
                let line = std::mem::take(&mut self.line);
                if let Some(e) = self.line_done(&String::from_utf8_lossy(&line)) {
                    out.push(e);
                }
            } else {
                self.line.push(b);
                self.size += 1;
                if self.size > MAX_EVENT_BYTES {
                    return Err(format!("an event over {MAX_EVENT_BYTES} bytes"));
                }
            }
        }
        Ok(out)
    }

    fn line_done(&mut self, line: &str) -> Option<RawEvent> {
        if line.is_empty() {
            self.size = 0;
            let data = self.data.take();
            let event = self.event.take();
            // An event without data is not dispatched; its id still counts.
            return data.map(|data| RawEvent {
                id: self.id.clone(),
                event: event.unwrap_or_else(|| "message".into()),
                data,
            });
        }
        if line.starts_with(':') {
            return None;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "id" if !value.contains('\0') => self.id = Some(value.to_owned()),
            "event" => self.event = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {} // retry, and fields the spec says to ignore
        }
        None
    }
}

/// The events of an open `GET /v1/events`.
#[derive(Debug)]
pub struct EventStream {
    response: reqwest::Response,
    parser: Parser,
    ready: std::collections::VecDeque<RawEvent>,
    last_event_id: Option<u64>,
}

impl EventStream {
    pub(crate) fn new(response: reqwest::Response, after: Option<u64>) -> Self {
        Self {
            response,
            parser: Parser::default(),
            ready: Default::default(),
            last_event_id: after,
        }
    }

    /// The id of the last event received (or the one the stream started after): what to
    /// reconnect with.
    pub fn last_event_id(&self) -> Option<u64> {
        self.last_event_id
    }

    /// The next event; `None` once the broker closed the stream.
    pub async fn next(&mut self) -> Option<Result<Event, ClientError>> {
        loop {
            if let Some(raw) = self.ready.pop_front() {
                let decoded = serde_json::from_str::<Event>(&raw.data).map_err(|source| {
                    ClientError::Decode {
                        request: "GET /v1/events".into(),
                        source,
                    }
                });
                if let Ok(e) = &decoded {
                    self.last_event_id = Some(e.id);
                }
                return Some(decoded);
            }
            let chunk = match self.response.chunk().await {
                Ok(Some(c)) => c,
                Ok(None) => return None,
                Err(e) => {
                    return Some(Err(ClientError::Stream(e.to_string())));
                }
            };
            match self.parser.feed(&chunk) {
                Ok(events) => self.ready.extend(events),
                Err(e) => return Some(Err(ClientError::Stream(e))),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_fields_comments_and_every_line_ending_across_chunks() {
        let mut p = Parser::default();
        let mut all = Vec::new();
        let text = "retry: 1000\r\n\r\n: keep-alive\n\nid: 7\nevent: session.ended\ndata: {\"a\":\ndata:1}\n\nid:8\rdata: x\r\r";
        // Byte by byte: chunk boundaries anywhere, even inside a CRLF.
        for b in text.as_bytes() {
            all.extend(p.feed(std::slice::from_ref(b)).unwrap());
        }
        assert_eq!(
            all,
            [
                RawEvent {
                    id: Some("7".into()),
                    event: "session.ended".into(),
                    data: "{\"a\":\n1}".into(),
                },
                RawEvent {
                    id: Some("8".into()),
                    event: "message".into(),
                    data: "x".into(),
                },
            ]
        );
    }

    #[test]
    fn an_endless_line_is_refused() {
        let mut p = Parser::default();
        let big = vec![b'a'; MAX_EVENT_BYTES + 1];
        assert!(p.feed(&big).is_err());
    }
}
