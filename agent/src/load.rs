//! Host load sampling with sysinfo, off the async threads.

use std::sync::Arc;

use sysinfo::{CpuRefreshKind, MemoryRefreshKind, RefreshKind, System};
use tokio::sync::Mutex;

/// A sample of the machine's CPU and memory use.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Whole-machine CPU use since the previous sample, 0 to 100.
    pub cpu_percent: f32,
    /// Memory in use.
    pub mem_used_bytes: u64,
    /// Physical memory.
    pub mem_total_bytes: u64,
}

/// Keeps the sysinfo state between samples (CPU use is a difference between two refreshes).
#[derive(Clone)]
pub struct Sampler {
    sys: Arc<Mutex<System>>,
}

impl std::fmt::Debug for Sampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sampler").finish_non_exhaustive()
    }
}

fn refresh_kind() -> RefreshKind {
    RefreshKind::nothing()
        .with_cpu(CpuRefreshKind::nothing().with_cpu_usage())
        .with_memory(MemoryRefreshKind::nothing().with_ram())
}

impl Sampler {
    /// Takes a first reading (blocking: call it off the async threads, or once at start).
    pub fn new() -> Self {
        Self {
            sys: Arc::new(Mutex::new(System::new_with_specifics(refresh_kind()))),
        }
    }

    /// Refreshes and reads, on the blocking pool. The async mutex serialises samplers and is
    /// released before the result is used.
    pub async fn sample(&self) -> Sample {
        let sys = Arc::clone(&self.sys);
        let mut guard = sys.lock_owned().await;
        let joined = tokio::task::spawn_blocking(move || {
            guard.refresh_specifics(refresh_kind());
            Sample {
                cpu_percent: guard.global_cpu_usage(),
                mem_used_bytes: guard.used_memory(),
                mem_total_bytes: guard.total_memory(),
            }
        })
        .await;
        joined.unwrap_or(Sample {
            cpu_percent: 0.0,
            mem_used_bytes: 0,
            mem_total_bytes: 0,
        })
    }
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new()
    }
}
