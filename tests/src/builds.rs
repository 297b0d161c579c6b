//! Builds as an operator makes them (issue 27): a game's directory as a `.tar.gz`, named by
//! its sha256, and the central game entry that runs it.

use std::io::Write as _;

/// The sha256 of `data`, as a build is named.
pub fn sha256(data: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, data);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A well-formed `.tar.gz` of `files`: path, mode, content.
pub fn tar_gz(files: &[(&str, u32, &[u8])]) -> Vec<u8> {
    let mut tarred = tar::Builder::new(Vec::new());
    for (path, mode, content) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(*mode);
        h.set_entry_type(tar::EntryType::Regular);
        tarred
            .append_data(&mut h, path, *content)
            .expect("append to the archive");
    }
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&tarred.into_inner().expect("the archive"))
        .expect("gzip");
    gz.finish().expect("gzip")
}

/// A game's build: `bin/start`, its program (a script that runs the test game from the
/// build's directory), and `greeting.txt`, which the game greets its players with, so what a
/// player reads comes from the build's own files.
pub fn game_build(greeting: &str) -> Vec<u8> {
    game_build_with(greeting, &[])
}

/// [`game_build`] with more files (path, content): assets.
pub fn game_build_with(greeting: &str, assets: &[(&str, &[u8])]) -> Vec<u8> {
    let start = format!(
        "#!/bin/sh\nhere=$(dirname \"$0\")/..\nexec {} --listen --greet-file \"$here/greeting.txt\" \"$@\"\n",
        crate::test_game().display()
    );
    let greeting = format!("{greeting}\n");
    let mut files: Vec<(&str, u32, &[u8])> = vec![
        ("bin/start", 0o755, start.as_bytes()),
        ("greeting.txt", 0o644, greeting.as_bytes()),
    ];
    files.extend(assets.iter().map(|(p, c)| (*p, 0o644, *c)));
    tar_gz(&files)
}

/// `n` bytes that do not compress (an xorshift stream): an asset that keeps a build as large
/// gzipped as unpacked.
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// The central game entry that runs [`game_build`]'s build: ready once it listens.
pub fn game_entry() -> serde_json::Value {
    serde_json::json!({
        "command": "{build}/bin/start",
        "ready": {"tcp": true},
        "ready_timeout": 10,
    })
}

/// A build whose program exits at once: every launch of it fails before it is ready.
pub fn broken_build() -> Vec<u8> {
    tar_gz(&[("bin/start", 0o755, b"#!/bin/sh\nexit 3\n")])
}

/// Uploads `data` as a build through `client` (an admin's), streamed from a file as
/// `arcade build push` does; answers its id.
pub async fn upload(client: &portal_client::Client, data: &[u8]) -> protocol::BuildId {
    let id = protocol::BuildId::new(sha256(data)).expect("a sha256");
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("build.tar.gz");
    std::fs::write(&path, data).expect("write the build");
    let file = tokio::fs::File::open(&path).await.expect("open the build");
    let (build, _) = client
        .put_build(&id, file, data.len() as u64, |_| {})
        .await
        .expect("upload the build");
    assert_eq!(build.build, id);
    id
}
