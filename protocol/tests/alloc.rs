//! Property: decoding random bytes and mutated valid frames never panics, and never allocates
//! more than a fixed bound at once, whatever length a hostile payload claims. A counting global
//! allocator records the largest single allocation made while decoding.
//!
//! The bound is not the frame size itself: bincode checks a claimed container length against
//! its byte limit, but serde then reserves capacity for that many *decoded* elements (up to
//! 1 MiB, its "cautious" cap), and a decoded element is larger than its encoding. So one
//! decode may reserve up to about 1 MiB — never the terabytes a claimed length could ask for.
//!
//! Also replays the committed fuzzing corpus (`protocol/fuzz/corpus/decode`), the 10-byte
//! allocation bomb among it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use protocol::codec::{decode, encode};
use protocol::wire::{AgentMessage, BrokerMessage, Hello, HelloReply, Load};
use rand::{Rng, SeedableRng};

struct Counting;

static LARGEST: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Only allocations of the thread that decodes count (the test harness allocates too).
    static COUNTING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn note(size: usize) {
    if COUNTING.with(std::cell::Cell::get) {
        LARGEST.fetch_max(size, Ordering::Relaxed);
    }
}

// The allocator itself needs `unsafe` by its trait's contract; it only forwards to `System`.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn decode_all(bytes: &[u8]) {
    COUNTING.with(|c| c.set(true));
    decode_each(bytes);
    COUNTING.with(|c| c.set(false));
}

fn decode_each(bytes: &[u8]) {
    let _ = decode::<AgentMessage>(bytes);
    let _ = decode::<BrokerMessage>(bytes);
    let _ = decode::<Hello>(bytes);
    let _ = decode::<HelloReply>(bytes);
    let _ = protocol::codec::probe_version(bytes);
}

/// The most one decode may reserve at once: serde's 1 MiB cautious cap on a container's
/// capacity, see the module docs.
const BOUND: usize = 1024 * 1024;

#[test]
fn hostile_payloads_never_panic_nor_allocate_beyond_the_limit() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(2026);
    let valid: Vec<Vec<u8>> = vec![
        encode(&AgentMessage::Heartbeat(Load {
            cpu_percent: 1.0,
            mem_used_bytes: 2,
            mem_total_bytes: 3,
            sessions: vec![],
        }))
        .unwrap()
        .to_vec(),
        encode(&BrokerMessage::GoingAway).unwrap().to_vec(),
        encode(&HelloReply::Rejected("no".into())).unwrap().to_vec(),
    ];
    LARGEST.store(0, Ordering::Relaxed);
    let mut inputs = 0u64;
    for _ in 0..50_000 {
        let bytes: Vec<u8> = if rng.gen_bool(0.5) {
            let len = rng.gen_range(0..96);
            (0..len).map(|_| rng.gen()).collect()
        } else {
            let mut b = valid[rng.gen_range(0..valid.len())].clone();
            // Mutate, and sometimes splice in a huge varint length (0xFD + u64).
            for _ in 0..rng.gen_range(1..4) {
                let i = rng.gen_range(0..b.len());
                b[i] = rng.gen();
            }
            if rng.gen_bool(0.3) {
                let at = rng.gen_range(0..=b.len());
                let mut bomb = vec![0xFD];
                bomb.extend_from_slice(&rng.gen::<u64>().to_le_bytes());
                b.splice(at..at, bomb);
            }
            b
        };
        decode_all(&bytes);
        inputs += 1;
    }
    let largest = LARGEST.load(Ordering::Relaxed);
    assert!(
        largest <= BOUND,
        "an allocation of {largest} bytes while decoding"
    );
    println!("{inputs} inputs; largest allocation {largest} bytes");
}

#[test]
fn the_committed_corpus_decodes_without_panic() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/decode");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).expect("the fuzzing corpus is committed") {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        LARGEST.store(0, Ordering::Relaxed);
        decode_all(&bytes);
        assert!(LARGEST.load(Ordering::Relaxed) <= BOUND);
        n += 1;
    }
    assert!(n >= 1, "empty corpus");
}
