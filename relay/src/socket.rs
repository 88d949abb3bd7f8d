//! What both WebSocket endpoints share: reading typed messages from axum's socket.

use axum::extract::ws::Message;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use sightline_proto::{DecodeError, decode};

/// Reads the next text message. `None` when the socket closed; binary frames are errors. (axum
/// enforces the size limit and closes oversized sockets, which ends up as `None`.)
pub async fn next_message<T, S>(rx: &mut S) -> Option<Result<T, DecodeError>>
where
    T: DeserializeOwned,
    S: futures_util::Stream<Item = Result<Message, axum::Error>> + Unpin,
{
    loop {
        match rx.next().await? {
            Ok(Message::Text(text)) => return Some(decode(&text)),
            Ok(Message::Binary(_)) => {
                return Some(Err(DecodeError::Malformed("binary frames are not part of the protocol".into())));
            }
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(Message::Ping(_) | Message::Pong(_)) => continue,
        }
    }
}
