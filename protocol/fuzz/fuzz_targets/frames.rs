//! The framing decoder fed arbitrary byte streams, the way a hostile peer would send them:
//! length prefixes of any size, frames cut anywhere.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use protocol::codec::MessageCodec;
use protocol::wire::{AgentMessage, BrokerMessage};
use tokio_util::codec::Decoder;

fuzz_target!(|data: &[u8]| {
    let mut codec = MessageCodec::<AgentMessage, BrokerMessage>::new();
    let mut buf = BytesMut::from(data);
    while let Ok(Some(_)) = codec.decode(&mut buf) {}
    let _ = codec.decode_eof(&mut buf);
});
