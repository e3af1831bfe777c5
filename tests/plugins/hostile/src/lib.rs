//! Misbehaves as its settings say, so the tests can prove the host contains each failure.
//! Modes: loop, memory, recursion, output, huge_output, trap, file, socket, state, log, env,
//! clock.
//! With `fail_first = N` it misbehaves on its first N calls (counted in host state, which
//! survives re-instantiation), then flags every access as `hostile_ok`.

use phiwatch_plugin_sdk::prelude::*;
use phiwatch_plugin_sdk::state;
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    mode: String,
    #[serde(default = "forever")]
    fail_first: u64,
    #[serde(default)]
    target: String,
}

fn forever() -> u64 {
    u64::MAX
}

struct Hostile(Settings);

#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse(n: u64, buf: &mut [u8; 64]) -> u64 {
    buf[(n % 64) as usize] = n as u8;
    let mut local = [0u8; 64];
    local.copy_from_slice(buf);
    recurse(n + 1, &mut local) + local[3] as u64
}

impl Detector for Hostile {
    fn describe() -> Description {
        Description::new("hostile", "0.0.0", &["hostile_ok", "hostile_leak"])
    }

    fn configure(config: &str) -> Result<Self, String> {
        Ok(Hostile(phiwatch_plugin_sdk::parse_config(config)?))
    }

    fn detect(&mut self, batch: &Batch, out: &mut Vec<Finding>) {
        let calls: u64 = state::get_json("calls").unwrap_or(0);
        let _ = state::set_json("calls", &(calls + 1));
        let first = batch.accesses.first().map_or(0, |a| a.id);
        if calls < self.0.fail_first {
            match self.0.mode.as_str() {
                "loop" => {
                    let mut x: u64 = 1;
                    loop {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
                    }
                }
                "memory" => {
                    let mut hoard: Vec<Vec<u8>> = Vec::new();
                    loop {
                        hoard.push(vec![7u8; 1 << 20]);
                        std::hint::black_box(&hoard);
                    }
                }
                "recursion" => {
                    let mut buf = [0u8; 64];
                    std::hint::black_box(recurse(0, &mut buf));
                }
                "output" => {
                    for _ in 0..100_000u32 {
                        out.push(Finding::new("hostile_leak", Severity::Critical, "", first));
                    }
                    return;
                }
                "huge_output" => {
                    let text = "x".repeat(1000);
                    for _ in 0..2_000_000u32 {
                        out.push(Finding::new(
                            "hostile_leak",
                            Severity::Critical,
                            text.clone(),
                            first,
                        ));
                    }
                    return;
                }
                "trap" => panic!("hostile plugin panics on purpose"),
                "file" => match std::fs::read_to_string(&self.0.target) {
                    Ok(s) => {
                        out.push(Finding::new(
                            "hostile_leak",
                            Severity::Critical,
                            format!("read {}: {s}", self.0.target),
                            first,
                        ));
                        return;
                    }
                    Err(e) => panic!("opening {} failed: {e}", self.0.target),
                },
                "socket" => match std::net::TcpStream::connect(&self.0.target) {
                    Ok(_) => {
                        out.push(Finding::new(
                            "hostile_leak",
                            Severity::Critical,
                            format!("connected to {}", self.0.target),
                            first,
                        ));
                        return;
                    }
                    Err(e) => panic!("connecting to {} failed: {e}", self.0.target),
                },
                "env" => {
                    let vars: Vec<String> =
                        std::env::vars().map(|(k, v)| format!("{k}={v}")).collect();
                    if !vars.is_empty() {
                        out.push(Finding::new(
                            "hostile_leak",
                            Severity::Critical,
                            vars.join(" "),
                            first,
                        ));
                        return;
                    }
                    panic!("no environment to read");
                }
                "clock" => {
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    if now > 0 {
                        out.push(Finding::new(
                            "hostile_leak",
                            Severity::Critical,
                            format!("wall clock {now}"),
                            first,
                        ));
                        return;
                    }
                    panic!("the wall clock reads zero");
                }
                "state" => {
                    let chunk = vec![1u8; 1 << 20];
                    for i in 0.. {
                        if let Err(e) = state::set(&format!("hoard/{i}"), &chunk) {
                            panic!("state quota reached after {i} MiB: {e}");
                        }
                    }
                }
                "log" => {
                    for i in 0..1_000_000u32 {
                        phiwatch_plugin_sdk::host::log(
                            phiwatch_plugin_sdk::host::Level::Error,
                            &format!("flood {i}"),
                        );
                    }
                }
                other => panic!("unknown mode {other}"),
            }
        }
        for a in &batch.accesses {
            out.push(Finding::new(
                "hostile_ok",
                Severity::Low,
                "the hostile plugin behaved",
                a.id,
            ));
        }
    }
}

phiwatch_plugin_sdk::export_detector!(Hostile);
