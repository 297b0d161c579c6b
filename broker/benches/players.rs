//! What a player token costs a call against an API key (criterion; issue 26): identifying the
//! caller of one request (`auth::Keys::identify`) with an API key as the same run's floor, a
//! player token already verified (remembered until its `exp`), and a token seen for the first
//! time, signed HS256, EdDSA or RS256. The figure to reach: cached, at most 5 µs above the key
//! at p50. Run: `cargo bench -p broker --bench players`.

use std::hint::black_box;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use broker::auth::{ApiKey, Keys};
use broker::players::{KeySpec, PlayerKeys};
use criterion::{criterion_main, BatchSize, Criterion};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

const SECRET: &str = "the-portal-servers-hs256-secret";

fn fixtures() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/players")
}

fn keys() -> Keys {
    let api: Vec<ApiKey> = ["portal", "provider", "admin"]
        .iter()
        .map(|r| {
            format!("{r}:{r}-key-0123456789abcdef")
                .parse()
                .expect("key")
        })
        .collect();
    let players = PlayerKeys::load(vec![
        KeySpec::Hs256(SECRET.as_bytes().to_vec()),
        KeySpec::File(fixtures().join("ed-1.pem")),
        KeySpec::File(fixtures().join("rsa-1.pem")),
    ])
    .expect("player keys");
    Keys::new(api).with_players(Arc::new(players))
}

/// A token never seen before (its `jti` differs from every other), signed as `alg`.
fn fresh(alg: Algorithm) -> Vec<u8> {
    static N: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let claims = serde_json::json!({
        "sub": "alice", "exp": now + 3600, "jti": N.fetch_add(1, Ordering::Relaxed),
    });
    let (header, key) = match alg {
        Algorithm::EdDSA => {
            let pem = std::fs::read(fixtures().join("ed-1.key")).expect("ed key");
            let mut h = Header::new(alg);
            h.kid = Some("ed-1".into());
            (h, EncodingKey::from_ed_pem(&pem).expect("ed"))
        }
        Algorithm::RS256 => {
            let pem = std::fs::read(fixtures().join("rsa-1.key")).expect("rsa key");
            let mut h = Header::new(alg);
            h.kid = Some("rsa-1".into());
            (h, EncodingKey::from_rsa_pem(&pem).expect("rsa"))
        }
        _ => (
            Header::new(alg),
            EncodingKey::from_secret(SECRET.as_bytes()),
        ),
    };
    format!("Bearer {}", encode(&header, &claims, &key).expect("sign")).into_bytes()
}

fn bench(c: &mut Criterion) {
    let keys = keys();
    let mut g = c.benchmark_group("identify");
    let api = b"Bearer portal-key-0123456789abcdef".to_vec();
    g.bench_function("api key (floor)", |b| {
        b.iter(|| keys.identify(black_box(Some(&api))).expect("key"));
    });
    let cached = fresh(Algorithm::HS256);
    keys.identify(Some(&cached)).expect("token");
    g.bench_function("player token, cached", |b| {
        b.iter(|| keys.identify(black_box(Some(&cached))).expect("token"));
    });
    for (name, alg) in [
        ("player token, first sight, HS256", Algorithm::HS256),
        ("player token, first sight, EdDSA", Algorithm::EdDSA),
        ("player token, first sight, RS256", Algorithm::RS256),
    ] {
        g.bench_function(name, |b| {
            b.iter_batched(
                || fresh(alg),
                |t| keys.identify(black_box(Some(&t))).expect("token"),
                BatchSize::SmallInput,
            );
        });
    }
    g.finish();
}

fn benches() {
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
}

criterion_main!(benches);
