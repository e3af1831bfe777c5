//! `phiwatch bench --context`: how long loading a health system's context takes, and how
//! much memory it holds. Generates FHIR NDJSON of `staff` practitioners (each with a role
//! and two identifiers), `patients` patients (each with an MRN) and `encounters` encounters
//! (each with two participants), loads it the way the agent does, and reports the load time,
//! the peak resident memory, and the cost of a lookup by id beside one by identifier.

use crate::context::feeds::{ContextFeed, FhirFeed};
use crate::context::load_feeds;
use crate::settings::Settings;
use anyhow::{Context as _, Result};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

pub struct Sizes {
    pub staff: usize,
    pub patients: usize,
    pub encounters: usize,
}

/// Peak resident memory of this process (VmHWM), in bytes.
pub fn peak_rss() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = s
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

fn write(dir: &Path, s: &Sizes) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let file = |n: &str| -> Result<std::io::BufWriter<std::fs::File>> {
        Ok(std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(dir.join(n)).with_context(|| format!("creating {n}"))?,
        ))
    };
    let mut pr = file("Practitioner.ndjson")?;
    let mut role = file("PractitionerRole.ndjson")?;
    for i in 0..s.staff {
        writeln!(
            pr,
            r#"{{"resourceType":"Practitioner","id":"pr-{i}","identifier":[{{"system":"urn:ehr:login","value":"user{i}"}},{{"system":"http://hl7.org/fhir/sid/us-npi","value":"1{i:09}"}}],"name":[{{"family":"Family{}"}}],"address":[{{"line":["{} Oak Street"],"city":"Springfield","postalCode":"0{:04}"}}]}}"#,
            i % 5000,
            i % 997,
            i % 97
        )?;
        writeln!(
            role,
            r#"{{"resourceType":"PractitionerRole","id":"role-{i}","practitioner":{{"reference":"Practitioner/pr-{i}"}},"organization":{{"reference":"Organization/dept-{}"}},"code":[{{"coding":[{{"code":"{}"}}]}}]}}"#,
            i % 40,
            if i % 3 == 0 { "doctor" } else { "nurse" }
        )?;
    }
    pr.flush()?;
    role.flush()?;
    let mut pt = file("Patient.ndjson")?;
    for i in 0..s.patients {
        writeln!(
            pt,
            r#"{{"resourceType":"Patient","id":"pt-{i}","identifier":[{{"system":"urn:mrn","value":"M{i:08}"}}],"name":[{{"family":"Family{}"}}],"address":[{{"line":["{} Elm Avenue"],"city":"Springfield","postalCode":"0{:04}"}}]}}"#,
            i % 5000,
            i % 3001,
            i % 97
        )?;
    }
    pt.flush()?;
    let mut enc = file("Encounter.ndjson")?;
    for i in 0..s.encounters {
        let p = (i * 7919) % s.patients.max(1);
        writeln!(
            enc,
            r#"{{"resourceType":"Encounter","id":"e-{i}","subject":{{"reference":"Patient/pt-{p}"}},"participant":[{{"individual":{{"reference":"Practitioner/pr-{}"}}}},{{"individual":{{"reference":"Practitioner/pr-{}"}}}}],"period":{{"start":"2026-0{}-1{}T08:00:00Z","end":"2026-0{}-1{}T18:00:00Z"}},"serviceProvider":{{"reference":"Organization/dept-{}"}}}}"#,
            i % s.staff.max(1),
            (i * 31) % s.staff.max(1),
            1 + i % 9,
            i % 10,
            1 + i % 9,
            i % 10,
            i % 40
        )?;
    }
    enc.flush()?;
    Ok(())
}

pub fn run(s: &Sizes, dir: Option<&Path>) -> Result<String> {
    let (dir, _tmp) = super::work_dir(dir)?;
    let t = Instant::now();
    write(&dir, s)?;
    let generated = t.elapsed();
    let rss_before = peak_rss().unwrap_or(0);
    let feeds = [ContextFeed::Fhir(FhirFeed {
        path: dir.clone(),
        max_age_hours: None,
    })];
    let settings = Settings::default();
    let t = Instant::now();
    let (ctx, stats) = load_feeds(&feeds, &settings, &[])?;
    let loaded = t.elapsed();
    let rss = peak_rss().unwrap_or(0);
    // Lookups: by id (the fast path) and by identifier (alias), over 1,000,000 names.
    let n = 1_000_000usize;
    let t = Instant::now();
    let mut found = 0usize;
    for i in 0..n {
        let id = format!("pt-{}", (i * 104_729) % s.patients.max(1));
        found += usize::from(matches!(
            ctx.resolve_patient(&id),
            crate::context::Resolved::Found(_)
        ));
    }
    let by_id = t.elapsed().as_nanos() as f64 / n as f64;
    let t = Instant::now();
    for i in 0..n {
        let mrn = format!("urn:mrn|M{:08}", (i * 104_729) % s.patients.max(1));
        found += usize::from(matches!(
            ctx.resolve_patient(&mrn),
            crate::context::Resolved::Found(_)
        ));
    }
    let by_alias = t.elapsed().as_nanos() as f64 / n as f64;
    Ok(format!(
        "context: {} staff, {} patients, {} encounters ({} files written in {:.1} s)\n\
         load: {:.1} s; peak resident memory {:.2} GiB (before loading {:.2} GiB); {} relationships\n\
         lookups: {:.0} ns by id, {:.0} ns by identifier (alias), {} of {} found\n{}",
        s.staff,
        s.patients,
        s.encounters,
        stats.files,
        generated.as_secs_f64(),
        loaded.as_secs_f64(),
        rss as f64 / (1u64 << 30) as f64,
        rss_before as f64 / (1u64 << 30) as f64,
        ctx.relationship_count(),
        by_id,
        by_alias,
        found,
        2 * n,
        stats.render()
    ))
}
