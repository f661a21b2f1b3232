//! Reading a job's log stream: server-sent events (`id:`, `event:`, `data:` lines, blank line between
//! events; comments and keep-alives skipped).

use crate::{Error, Result};

/// One event: `log` (data: a log entry as JSON, id: its position) or `end` (data: the job's terminal
/// status).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamEvent {
    pub id: Option<i64>,
    pub event: String,
    pub data: String,
}

pub struct LogStream {
    url: String,
    response: reqwest::Response,
    buffer: Vec<u8>,
}

impl LogStream {
    pub(crate) fn new(url: String, response: reqwest::Response) -> Self {
        LogStream {
            url,
            response,
            buffer: Vec::new(),
        }
    }

    /// The next event; `None` when the server closed the stream (after `end`, or to have the client
    /// reconnect).
    pub async fn next(&mut self) -> Result<Option<StreamEvent>> {
        loop {
            if let Some(at) = self.buffer.windows(2).position(|w| w == b"\n\n") {
                let block: Vec<u8> = self.buffer.drain(..at + 2).collect();
                if let Some(event) = parse(&String::from_utf8_lossy(&block)) {
                    return Ok(Some(event));
                }
                continue;
            }
            match self.response.chunk().await {
                Ok(Some(bytes)) => self.buffer.extend_from_slice(&bytes),
                Ok(None) => return Ok(None),
                Err(source) => {
                    return Err(Error::Transport {
                        url: self.url.clone(),
                        source,
                    });
                }
            }
        }
    }
}

fn parse(block: &str) -> Option<StreamEvent> {
    let (mut id, mut event, mut data) = (None, String::from("message"), Vec::new());
    let mut any = false;
    for line in block.lines() {
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = value.parse().ok(),
            "event" => event = value.to_owned(),
            "data" => data.push(value),
            _ => continue,
        }
        any = true;
    }
    any.then(|| StreamEvent {
        id,
        event,
        data: data.join("\n"),
    })
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn events_comments_and_multiline_data() {
        let e = parse("id: 7\nevent: log\ndata: {\"a\":1}\n").unwrap();
        assert_eq!(
            (e.id, e.event.as_str(), e.data.as_str()),
            (Some(7), "log", "{\"a\":1}")
        );
        assert!(parse(": keep-alive\n").is_none());
        assert_eq!(parse("data: a\ndata: b\n").unwrap().data, "a\nb");
    }
}
