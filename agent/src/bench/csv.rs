//! `phiwatch bench --csv`: a Purview-size EHR extract (the `purview-epic` profile's columns,
//! tab separated, US local times) made from a generated day, read three ways in one run: the raw
//! CSV parse of the file (the baseline), the CSV decode stage alone (header resolution, times,
//! action vocabulary, AccessEvents), and the whole scan with the Cedar pack and the shipped
//! plugins. Rates are rows per second (the pipeline on one thread, each plugin on its own),
//! each also as a ratio to the raw parse.

use crate::decode::csv::{CsvDecoder, CsvMapping};
use crate::decode::{decode_audit_event, Decoded, LineDecoder};
use crate::demo;
use crate::plugin::PluginSet;
use crate::reload::Loaded;
use crate::scan::{scan_sources, ScanSource, Sinks};
use crate::settings::Settings;
use anyhow::Result;
use chrono::TimeZone;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;
use std::time::Instant;

const METRICS: [&str; 5] = [
    "THE PROBLEM LIST IS VIEWED",
    "CHART REVIEW TAB ACCESSED",
    "PEND A NOTE",
    "PRINT AFTER VISIT SUMMARY",
    "PATIENT LOOKUP SEARCH",
];

/// Each patient's name and household as an extract writes them on every row, by id and MRN.
fn households(context: &Path) -> Result<std::collections::HashMap<String, String>> {
    let mut m = std::collections::HashMap::new();
    let text = std::fs::read_to_string(context.join("Patient.ndjson"))?;
    for line in text.lines() {
        let p: serde_json::Value = serde_json::from_str(line)?;
        let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
        let a = &p["address"][0];
        let row = [
            s(&p["name"][0]["given"][0]),
            s(&p["name"][0]["family"]).to_uppercase(),
            s(&a["line"][0]).to_uppercase(),
            s(&a["city"]),
            s(&a["state"]),
            s(&a["postalCode"]),
        ]
        .join("\t");
        m.insert(s(&p["identifier"][0]["value"]), row.clone());
        m.insert(format!("Patient/{}", s(&p["id"])), row);
    }
    Ok(m)
}

/// Writes the day's AuditEvents as a `purview-epic` extract with each patient's household
/// inline, as Purview files carry it; the rows written.
fn write_extract(ds: &demo::DataSet, out: &Path) -> Result<u64> {
    let zone = chrono_tz::America::Chicago;
    let homes = households(&ds.context)?;
    let mut w = BufWriter::with_capacity(1 << 20, std::fs::File::create(out)?);
    w.write_all(b"ACCESS_LOG.ACCESS_TIME\tACCESS_LOG_METRIC.METRIC_NAME\tACCESS_LOG.WORKSTATION_ID\tZC_METRIC_GROUP.NAME\tPATIENT.PAT_MRN_ID\tPATIENT.PAT_FIRST_NAME\tPATIENT.PAT_LAST_NAME\tPATIENT.ADD_LINE_1\tPATIENT.CITY\tZC_STATE.NAME\tPATIENT.ZIP\tZC_BTG_REASON.NAME\tEMP.SYSTEM_LOGIN\n")?;
    let bare = |s: &str| s.rsplit('|').next().unwrap_or(s).to_owned();
    let mut rows = 0u64;
    let reader = BufReader::with_capacity(1 << 20, std::fs::File::open(&ds.events)?);
    for line in reader.lines() {
        let accesses = match decode_audit_event(line?.as_bytes()) {
            Ok(Decoded::Access(a)) => vec![a],
            Ok(Decoded::Many { accesses, .. }) => accesses,
            _ => continue,
        };
        for a in accesses {
            let time = zone
                .timestamp_millis_opt(a.time_ms)
                .single()
                .map(|t| t.format("%m/%d/%Y %I:%M:%S %p").to_string())
                .unwrap_or_default();
            let patient = a.patient.as_deref().unwrap_or("");
            let home = homes.get(patient).or_else(|| homes.get(&bare(patient)));
            writeln!(
                w,
                "{time}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                METRICS[rows as usize % METRICS.len()],
                a.workstation,
                a.subtype,
                bare(patient),
                home.map_or("\t\t\t\t\t", String::as_str),
                if a.break_glass { "Emergency" } else { "" },
                bare(&a.user)
            )?;
            rows += 1;
        }
    }
    w.flush()?;
    Ok(rows)
}

fn mapping() -> CsvMapping {
    toml::from_str(
        "profile = \"purview-epic\"\ntimezone = \"America/Chicago\"\n[actions]\n\"PEND A NOTE\" = \"modify\"\n\"PRINT AFTER VISIT SUMMARY\" = \"print\"\n\"PATIENT LOOKUP SEARCH\" = \"query\"\n",
    )
    .expect("the bench mapping parses")
}

pub fn run(events: usize, dir: Option<&Path>) -> Result<()> {
    let settings = Settings::default();
    let (dir, _tmp) = super::work_dir(dir)?;
    let ds = demo::DataSet::at(&dir);
    let extract = dir.join("purview-epic.txt");
    if !extract.exists() {
        eprintln!(
            "generating a day of {events} events in {} ...",
            dir.display()
        );
        demo::generate(&dir, events, 7, &settings)?;
        let rows = write_extract(&ds, &extract)?;
        eprintln!("wrote {rows} rows to {}", extract.display());
    }
    let bytes = std::fs::metadata(&extract)?.len();

    // Warm the page cache, then the baseline: every record through the csv crate.
    std::fs::read(&extract)?;
    let t = Instant::now();
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(b'\t')
        .flexible(true)
        .from_path(&extract)?;
    let mut rec = csv::ByteRecord::new();
    let mut raw_rows = 0u64;
    while reader.read_byte_record(&mut rec)? {
        raw_rows += 1;
    }
    let raw = (raw_rows, t.elapsed().as_secs_f64());

    let mut decoder =
        CsvDecoder::new(&mapping(), Default::default()).map_err(anyhow::Error::msg)?;
    let t = Instant::now();
    let mut file = BufReader::with_capacity(1 << 20, std::fs::File::open(&extract)?);
    let mut line = Vec::with_capacity(1024);
    let (mut decoded, mut bad) = (0u64, 0u64);
    loop {
        line.clear();
        if file.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        let l = line.strip_suffix(b"\n").unwrap_or(&line);
        match decoder.decode(&extract, (0, 0), l) {
            Ok(item) => decoded += item.accesses().len() as u64,
            Err(_) => bad += 1,
        }
    }
    let decode = (decoded, t.elapsed().as_secs_f64());
    anyhow::ensure!(bad == 0, "{bad} rows failed to decode");

    let Loaded {
        settings,
        pack,
        mut context,
        plugins,
        ..
    } = super::day_with_plugins(&ds)?;
    let plugin_metrics = std::sync::Arc::new(crate::plugin::PluginMetrics::default());
    let plugin_set = PluginSet::new(&plugins, None, plugin_metrics.clone())?;
    let mut pipeline = crate::pipeline::Pipeline::new(&settings, &pack).with_plugins(plugin_set);
    let mut sources = vec![ScanSource {
        paths: vec![extract.clone()],
        decoder: LineDecoder::Csv(Box::new(
            CsvDecoder::new(&mapping(), Default::default()).map_err(anyhow::Error::msg)?,
        )),
        max_line_bytes: 1 << 20,
    }];
    let mut sink = std::io::sink();
    let t = Instant::now();
    let s = scan_sources(
        &mut sources,
        &mut context,
        &mut pipeline,
        &mut Sinks {
            findings: &mut sink,
            rejects: None,
            store: None,
            store_accesses: false,
            only_detector: None,
            grouping: None,
        },
    )?;
    let whole = (s.events, t.elapsed().as_secs_f64());

    report(
        (raw_rows, bytes),
        [raw, decode, whole],
        &plugin_metrics,
        s.findings,
    );
    Ok(())
}

/// Prints each stage's rate beside the raw parse, and the time inside each plugin.
fn report(
    (rows, bytes): (u64, u64),
    stages: [(u64, f64); 3],
    plugin_metrics: &crate::plugin::PluginMetrics,
    findings: u64,
) {
    let rate = |(n, secs): (u64, f64)| n as f64 / secs.max(1e-9);
    println!(
        "phiwatch bench --csv: {} rows, {:.0} MB (purview-epic profile, tab separated); pipeline on one thread, plugins beside it",
        rows,
        bytes as f64 / 1e6
    );
    println!(
        "  {:<46} {:>12} {:>8} {:>9}",
        "stage", "rows/s", "ratio", "seconds"
    );
    let names = [
        "raw CSV parse (csv crate, ByteRecord)",
        "CSV decode (profile, times, actions)",
        "whole scan: Cedar + shipped plugins",
    ];
    let raw = stages[0];
    for (stage, r) in names.into_iter().zip(stages) {
        println!(
            "  {:<46} {:>12.0} {:>8.2} {:>9.1}",
            stage,
            rate(r),
            rate(r) / rate(raw),
            r.1
        );
    }
    let busy: Vec<String> = plugin_metrics
        .snapshot()
        .iter()
        .map(|(name, c)| format!("{name} {:.1} s", c.busy.as_secs_f64()))
        .collect();
    println!(
        "  of the whole scan, inside each plugin: {}",
        busy.join(", ")
    );
    println!(
        "  findings {}; targets: decode >= 300,000 rows/s, a 5,000,000-row file scanned in < 120 s",
        findings
    );
}
