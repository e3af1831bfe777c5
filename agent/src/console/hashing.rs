//! Password checks on a small pool of threads of their own.
//!
//! An Argon2id check is memory-hard on purpose: 19 MiB and about 30 ms of a core. Run on
//! tokio's blocking pool (up to 512 threads), 60 concurrent sign-ins allocated 19 MiB in as
//! many threads, and glibc kept each thread's arena afterwards (1.15 GB never returned). Here
//! a fixed number of workers each own one reusable memory block, so the cost of any number
//! of sign-ins is `workers × 19 MiB`, allocated once. Checks beyond the queue are refused
//! at once, so a flood of sign-ins gets a 503 rather than a queue that grows.

use argon2::password_hash::PasswordHash;
use argon2::{Algorithm, Argon2, Block, Params, Version};
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Mutex;
use tokio::sync::oneshot;

struct Job {
    hash: String,
    password: String,
    answer: oneshot::Sender<bool>,
}

pub struct Hashing {
    jobs: Mutex<SyncSender<Job>>,
}

/// Why a check did not run.
#[derive(Debug, PartialEq, Eq)]
pub enum Busy {
    /// Every worker is busy and the queue is full.
    Full,
    /// The workers are gone (the process is ending).
    Stopped,
}

impl Hashing {
    /// `workers` threads, and room for `queue` checks waiting.
    pub fn new(workers: usize, queue: usize) -> Self {
        let (tx, rx) = sync_channel::<Job>(queue);
        let rx = std::sync::Arc::new(Mutex::new(rx));
        for n in 0..workers.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || {
                    let mut memory: Vec<Block> = Vec::new();
                    loop {
                        let job = match rx.lock().unwrap_or_else(|e| e.into_inner()).recv() {
                            Ok(j) => j,
                            Err(_) => return,
                        };
                        let ok = verify_with(&mut memory, &job.hash, &job.password);
                        let _ = job.answer.send(ok);
                    }
                });
            if let Err(e) = spawned {
                tracing::error!("starting a password worker: {e}");
            }
        }
        Hashing {
            jobs: Mutex::new(tx),
        }
    }

    /// Whether `password` matches the PHC string `hash`.
    pub async fn verify(&self, hash: String, password: String) -> Result<bool, Busy> {
        self.submit(hash, password)?
            .await
            .map_err(|_| Busy::Stopped)
    }

    /// Queues a check; refuses at once when the queue is full.
    pub fn submit(&self, hash: String, password: String) -> Result<oneshot::Receiver<bool>, Busy> {
        let (answer, rx) = oneshot::channel();
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .try_send(Job {
                hash,
                password,
                answer,
            });
        match sent {
            Ok(()) => Ok(rx),
            Err(TrySendError::Full(_)) => Err(Busy::Full),
            Err(TrySendError::Disconnected(_)) => Err(Busy::Stopped),
        }
    }
}

/// Verifies in `memory`, grown to the hash's cost once and reused.
fn verify_with(memory: &mut Vec<Block>, hash: &str, password: &str) -> bool {
    let Ok(h) = PasswordHash::new(hash) else {
        return false;
    };
    let (Some(salt), Some(expected)) = (h.salt, h.hash) else {
        return false;
    };
    let Ok(alg) = Algorithm::try_from(h.algorithm) else {
        return false;
    };
    let version = h
        .version
        .and_then(|v| Version::try_from(v).ok())
        .unwrap_or_default();
    let Ok(params) = Params::try_from(&h) else {
        return false;
    };
    let mut salt_buf = [0u8; 64];
    let Ok(salt) = salt.decode_b64(&mut salt_buf) else {
        return false;
    };
    let blocks = params.block_count();
    if memory.len() != blocks {
        memory.clear();
        memory.resize(blocks, Block::default());
    }
    let mut out = vec![0u8; expected.len()];
    let argon = Argon2::new(alg, version, params);
    if argon
        .hash_password_into_with_memory(password.as_bytes(), salt, &mut out, &mut memory[..])
        .is_err()
    {
        return false;
    }
    use subtle::ConstantTimeEq as _;
    bool::from(out.as_slice().ct_eq(expected.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn verifies_phc_hashes_with_reused_memory() {
        let hash = super::super::accounts::hash_password("a long enough password").unwrap();
        let h = Hashing::new(1, 4);
        assert_eq!(
            h.verify(hash.clone(), "a long enough password".into())
                .await,
            Ok(true)
        );
        assert_eq!(
            h.verify(hash.clone(), "a wrong password!!".into()).await,
            Ok(false)
        );
        assert_eq!(h.verify("not a hash".into(), "x".into()).await, Ok(false));
    }

    #[test]
    fn a_full_queue_refuses_at_once() {
        let h = Hashing::new(1, 1);
        let hash = super::super::accounts::hash_password("a long enough password").unwrap();
        let queued: Vec<_> = (0..20)
            .map(|_| h.submit(hash.clone(), "guess guess guess".into()))
            .collect();
        assert!(queued.iter().any(|q| matches!(q, Err(Busy::Full))));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for q in queued.into_iter().flatten() {
            assert_eq!(rt.block_on(q), Ok(false));
        }
    }
}
