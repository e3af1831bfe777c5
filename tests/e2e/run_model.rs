//! Model-based test of `phiwatch run`: random sequences of writes, partial-line writes,
//! rename rotations, copytruncate, deletes and `kill -9` + restart of the real agent. After
//! each sequence the set of accesses in the store must equal the set of events written:
//! nothing lost, nothing foreign (and the store's keys make duplicates impossible to hide).

mod common;

use proptest::prelude::*;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
enum Op {
    Write(usize),
    /// Write some lines, the last one cut in half; the rest follows with the next write.
    WritePartial(usize),
    RotateRename,
    CopyTruncate,
    /// Delete the oldest rotated file, once the agent has stored what it holds.
    DeleteRotated,
    KillRestart,
    Pause(u64),
    /// Wait until the agent has stored every whole line written so far.
    Settle,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1usize..40).prop_map(Op::Write),
        2 => (1usize..10).prop_map(Op::WritePartial),
        1 => Just(Op::RotateRename),
        1 => Just(Op::CopyTruncate),
        1 => Just(Op::DeleteRotated),
        2 => Just(Op::CopyTruncate),
        2 => Just(Op::KillRestart),
        2 => (0u64..150).prop_map(Op::Pause),
        3 => Just(Op::Settle),
    ]
}

struct World {
    dir: PathBuf,
    log: PathBuf,
    next_id: usize,
    written: BTreeSet<String>,
    /// The second half of a line whose first half is already in the log.
    pending: Option<Vec<u8>>,
    rotated: Vec<PathBuf>,
    rotations: usize,
    agent: Option<Child>,
    /// A running agent failed to catch up within the limit (a liveness failure).
    stalled: Option<String>,
}

fn event(id: &str, n: usize) -> String {
    format!(
        r#"{{"resourceType":"AuditEvent","id":"{id}","action":"R","recorded":"2026-03-10T14:{:02}:{:02}Z","agent":[{{"who":{{"reference":"Practitioner/u{}"}},"requestor":true}}],"entity":[{{"what":{{"reference":"Patient/p{}"}},"role":{{"code":"1"}}}}]}}"#,
        n / 60 % 60,
        n % 60,
        n % 7,
        n % 13
    ) + "\n"
}

impl World {
    fn new(dir: &Path) -> World {
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        std::fs::write(
            dir.join("phiwatch.toml"),
            format!(
                "data_dir = \"{d}/data\"\n[http]\nlisten = \"127.0.0.1:0\"\n[[source]]\nkind = \"file\"\nname = \"ehr\"\npaths = [\"{d}/logs/audit.ndjson*\"]\nformat = \"fhir-auditevent\"\npoll_ms = 15\n",
                d = dir.display()
            ),
        )
        .unwrap();
        World {
            dir: dir.to_owned(),
            log: dir.join("logs/audit.ndjson"),
            next_id: 0,
            written: BTreeSet::new(),
            pending: None,
            rotated: Vec::new(),
            rotations: 0,
            agent: None,
            stalled: None,
        }
    }

    fn start(&mut self) {
        let child = Command::new(env!("CARGO_BIN_EXE_phiwatch"))
            .args([
                "run",
                "--config",
                self.dir.join("phiwatch.toml").to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start agent");
        self.agent = Some(child);
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.agent.take() {
            // SIGKILL: no chance to flush anything.
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn append(&mut self, bytes: &[u8]) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        f.write_all(bytes).unwrap();
    }

    fn finish_pending(&mut self) {
        if let Some(rest) = self.pending.take() {
            self.append(&rest);
        }
    }

    fn write(&mut self, n: usize, cut_last: bool) {
        self.finish_pending();
        let mut buf = Vec::new();
        for i in 0..n {
            let id = format!("ev-{:06}", self.next_id);
            let line = event(&id, self.next_id);
            self.next_id += 1;
            self.written.insert(id);
            if cut_last && i == n - 1 {
                let cut = line.len() / 2;
                buf.extend_from_slice(&line.as_bytes()[..cut]);
                self.pending = Some(line.as_bytes()[cut..].to_vec());
            } else {
                buf.extend_from_slice(line.as_bytes());
            }
        }
        self.append(&buf);
    }

    fn stored(&self) -> BTreeSet<String> {
        let db = self.dir.join("data/phiwatch.db");
        if !db.exists() {
            return BTreeSet::new();
        }
        let Ok(conn) =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        else {
            return BTreeSet::new();
        };
        let Ok(mut stmt) = conn.prepare("SELECT event_id FROM accesses") else {
            return BTreeSet::new();
        };
        stmt.query_map([], |r| r.get::<_, String>(0))
            .map(|rows| rows.filter_map(Result::ok).collect())
            .unwrap_or_default()
    }

    /// Waits until everything written (whole lines) is stored; the agent must be running.
    fn sync(&mut self, limit: Duration) -> BTreeSet<String> {
        let complete: BTreeSet<String> = match &self.pending {
            // The cut line is not complete yet; it cannot be stored.
            Some(_) => {
                let mut w = self.written.clone();
                w.remove(&format!("ev-{:06}", self.next_id - 1));
                w
            }
            None => self.written.clone(),
        };
        let deadline = Instant::now() + limit;
        loop {
            let s = self.stored();
            if s.is_superset(&complete) {
                return s;
            }
            if Instant::now() > deadline {
                self.stalled.get_or_insert(format!(
                    "agent did not catch up: {} of {} whole lines stored",
                    s.intersection(&complete).count(),
                    complete.len()
                ));
                return s;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Rotates the live log to the next numbered name, the way `how` says (rename or copy).
    fn rotate(&mut self, how: impl FnOnce(&Path, &Path) -> std::io::Result<()>) {
        self.finish_pending();
        if self.log.exists() {
            self.rotations += 1;
            let to = self
                .dir
                .join(format!("logs/audit.ndjson.{}", self.rotations));
            how(&self.log, &to).unwrap();
            self.rotated.push(to);
        }
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Write(n) => self.write(*n, false),
            Op::WritePartial(n) => self.write(*n, true),
            Op::RotateRename => self.rotate(|log, to| std::fs::rename(log, to)),
            Op::CopyTruncate => self.rotate(|log, to| {
                std::fs::copy(log, to)?;
                std::fs::OpenOptions::new()
                    .write(true)
                    .truncate(true)
                    .open(log)?;
                Ok(())
            }),
            Op::DeleteRotated => {
                if !self.rotated.is_empty() {
                    if self.agent.is_none() {
                        self.start();
                    }
                    self.sync(Duration::from_secs(10));
                    let f = self.rotated.remove(0);
                    std::fs::remove_file(f).unwrap();
                }
            }
            Op::KillRestart => {
                self.kill();
                self.start();
            }
            Op::Pause(ms) => std::thread::sleep(Duration::from_millis(*ms)),
            Op::Settle => {
                if self.agent.is_none() {
                    self.start();
                }
                self.sync(Duration::from_secs(10));
            }
        }
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.kill();
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        max_shrink_iters: 20,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn stored_accesses_equal_written_events(ops in prop::collection::vec(op(), 4..22)) {
        let dir = tempfile::tempdir().unwrap();
        let mut w = World::new(dir.path());
        w.start();
        for op in &ops {
            w.apply(op);
        }
        w.finish_pending();
        if w.agent.is_none() {
            w.start();
        }
        let stored = w.sync(Duration::from_secs(30));
        let missing: Vec<_> = w.written.difference(&stored).take(5).collect();
        let foreign: Vec<_> = stored.difference(&w.written).take(5).collect();
        prop_assert!(w.stalled.is_none(), "{:?} after {:?}", w.stalled, ops);
        prop_assert!(missing.is_empty(), "lost {} events, e.g. {:?} after {:?}", w.written.len() - stored.intersection(&w.written).count(), missing, ops);
        prop_assert!(foreign.is_empty(), "unexpected events {:?}", foreign);
        prop_assert_eq!(stored.len(), w.written.len());
    }
}

/// The case random sequences find hardest: a truncated file rewritten before the next poll.
#[test]
fn copytruncate_then_short_write() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = World::new(dir.path());
    w.start();
    for op in [
        Op::Write(20),
        Op::Settle,
        Op::CopyTruncate,
        Op::Write(2),
        Op::Pause(100),
    ] {
        w.apply(&op);
    }
    let stored = w.sync(Duration::from_secs(20));
    assert_eq!(stored, w.written);
}

/// Found by the model test: a file truncated and rewritten between reading a chunk and
/// committing it must not lend its new first bytes to the old offset.
#[test]
fn copytruncate_three_times_with_partial_lines() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = World::new(dir.path());
    w.start();
    for op in [
        Op::Write(9),
        Op::CopyTruncate,
        Op::Write(13),
        Op::DeleteRotated,
        Op::CopyTruncate,
        Op::WritePartial(3),
        Op::CopyTruncate,
        Op::WritePartial(3),
        Op::Write(2),
        Op::Pause(125),
        Op::WritePartial(9),
    ] {
        w.apply(&op);
    }
    w.finish_pending();
    let stored = w.sync(Duration::from_secs(20));
    assert!(w.stalled.is_none(), "{:?}", w.stalled);
    assert_eq!(stored, w.written);
}
