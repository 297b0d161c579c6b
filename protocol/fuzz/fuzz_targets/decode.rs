//! Every message type decoded from arbitrary bytes: errors are fine, panics and unbounded
//! allocations are not (libFuzzer's `-rss_limit_mb`/`-malloc_limit_mb` catch the latter).
#![no_main]

use libfuzzer_sys::fuzz_target;
use protocol::codec::{decode, probe_version};
use protocol::wire::{AgentMessage, BrokerMessage, Hello, HelloReply};

fuzz_target!(|data: &[u8]| {
    let _ = decode::<AgentMessage>(data);
    let _ = decode::<BrokerMessage>(data);
    let _ = decode::<Hello>(data);
    let _ = decode::<HelloReply>(data);
    let _ = probe_version(data);
});
