//! `phiwatch bench --backtest`: `policy backtest` over a store of --events accesses (a
//! generated day scanned into it with the access log on), beside the scan that stored them,
//! in the same run. The draft is the pack in force itself, so both sides do the full work
//! and report no difference (which the benchmark checks).

use crate::backtest::{self, Side};
use crate::demo;
use crate::reload::Loaded;
use crate::scan::{scan_files, Sinks};
use crate::settings::Settings;
use crate::store::Store;
use anyhow::Result;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Instant;

pub fn run(events: usize, dir: Option<&Path>) -> Result<String> {
    let settings = Settings::default();
    let (dir, _tmp) = super::work_dir(dir)?;
    let ds = demo::DataSet::at(&dir);
    if !ds.events.exists() || super::count_lines(&ds.events)? != events as u64 {
        eprintln!(
            "generating a day of {events} events in {} ...",
            dir.display()
        );
        demo::generate(&dir, events, 7, &settings)?;
    }
    let Loaded {
        settings,
        pack,
        mut context,
        plugins,
        ..
    } = super::day_with_plugins(&ds)?;

    let db = dir.join("backtest-bench.db");
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", db.display()));
    }
    let mut store = Store::open(&db)?;
    let set = crate::plugin::PluginSet::new(&plugins, None, Default::default())?;
    let mut pipeline = crate::pipeline::Pipeline::new(&settings, &pack).with_plugins(set);
    let mut sink = std::io::sink();
    let t = Instant::now();
    let scanned = scan_files(
        std::slice::from_ref(&ds.events),
        &mut context,
        &mut pipeline,
        &mut Sinks {
            findings: &mut sink,
            rejects: None,
            store: Some(&mut store),
            store_accesses: true,
            only_detector: None,
            grouping: None,
        },
    )?;
    let scan = (scanned.events, t.elapsed().as_secs_f64());
    drop(store);

    let conn = Store::open_existing(&db)?;
    let window = (i64::MIN, i64::MAX);
    let t = Instant::now();
    let read = crate::store::stored_accesses(&conn, window.0, window.1, 1024, |_| {})?;
    let read = (read, t.elapsed().as_secs_f64());
    let mut rows = vec![("scan that stored them (Cedar + shipped plugins)", scan)];
    rows.push(("read the stored access log alone", read));
    for (label, plugins) in [
        ("backtest, Cedar only (both sides)", &[][..]),
        (
            "backtest, Cedar + shipped plugins (both sides)",
            &plugins[..],
        ),
    ] {
        let side = || Side {
            pack: &pack,
            plugins,
        };
        let t = Instant::now();
        let r = backtest::run(
            &conn,
            &context,
            &settings,
            &Default::default(),
            side(),
            side(),
            window,
            0,
            &mut |_, _| Ok(()),
        )?;
        anyhow::ensure!(
            r.total == Default::default(),
            "a draft equal to the pack in force made differences: {:?}",
            r.total
        );
        rows.push((label, (r.accesses, t.elapsed().as_secs_f64())));
    }

    let rate = |(n, secs): (u64, f64)| n as f64 / secs.max(1e-9);
    let baseline = rate(scan);
    let mut s = format!(
        "phiwatch bench --backtest: {} stored accesses; ratio = rate / the scan's rate\n",
        read.0
    );
    let _ = writeln!(
        s,
        "  {:<50} {:>12} {:>8} {:>9}",
        "stage", "accesses/s", "ratio", "seconds"
    );
    for (label, m) in rows {
        let _ = writeln!(
            s,
            "  {label:<50} {:>12.0} {:>8.2} {:>9.1}",
            rate(m),
            rate(m) / baseline,
            m.1
        );
    }
    Ok(s)
}
