//! What a notification says. Minimum necessary by default: alert id, category, severity,
//! counts, user id, department and a console link — no patient ids or record content unless
//! the receiver sets `include_patient`.

use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct AlertView {
    pub alert_id: i64,
    pub status: String,
    pub category: String,
    pub severity: String,
    pub user: String,
    pub department: String,
    pub first_seen: String,
    pub last_seen: String,
    pub findings: i64,
    /// Distinct patients involved.
    pub incidents: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
    /// Only with `include_patient`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub patients: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub explanations: Vec<String>,
}

impl AlertView {
    pub fn load(
        conn: &Connection,
        id: i64,
        include_patient: bool,
        console_url: Option<&str>,
    ) -> rusqlite::Result<Option<Self>> {
        let view = conn
            .query_row(
                "SELECT status, category, severity, user_id, department, first_ms, last_ms,
                        findings, incidents FROM alerts WHERE id = ?1",
                [id],
                |r| {
                    Ok(AlertView {
                        alert_id: id,
                        status: r.get(0)?,
                        category: r.get(1)?,
                        severity: r.get(2)?,
                        user: r.get(3)?,
                        department: r.get(4)?,
                        first_seen: crate::time::format_ms(r.get(5)?),
                        last_seen: crate::time::format_ms(r.get(6)?),
                        findings: r.get(7)?,
                        incidents: r.get(8)?,
                        link: Self::link(console_url, id),
                        patients: Vec::new(),
                        explanations: Vec::new(),
                    })
                },
            )
            .optional()?;
        let Some(mut view) = view else {
            return Ok(None);
        };
        if include_patient {
            let mut st = conn.prepare(
                "SELECT DISTINCT af.patient_id, f.explanation FROM alert_findings af
                 JOIN findings f ON f.event_id = af.event_id AND f.detector = af.detector
                 WHERE af.alert_id = ?1 ORDER BY f.time LIMIT 50",
            )?;
            let rows = st.query_map([id], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
            })?;
            for row in rows {
                let (p, e) = row?;
                view.add_patient(p, e);
            }
        }
        Ok(Some(view))
    }

    /// [`AlertView::load`] from fleet mode's PostgreSQL; `None` when there is no such alert.
    pub async fn load_fleet(
        client: &impl tokio_postgres::GenericClient,
        id: i64,
        include_patient: bool,
        console_url: Option<&str>,
    ) -> Result<Option<Self>, crate::fleet::FleetError> {
        let e = crate::fleet::FleetError::sql("reading an alert");
        let Some(r) = client
            .query_opt(
                "SELECT status, category, severity, user_id, department, first_ms, last_ms,
                        findings, incidents FROM alerts WHERE id = $1",
                &[&id],
            )
            .await
            .map_err(&e)?
        else {
            return Ok(None);
        };
        let mut view = Self {
            alert_id: id,
            status: r.get(0),
            category: r.get(1),
            severity: r.get(2),
            user: r.get(3),
            department: r.get(4),
            first_seen: crate::time::format_ms(r.get(5)),
            last_seen: crate::time::format_ms(r.get(6)),
            findings: r.get(7),
            incidents: r.get(8),
            link: Self::link(console_url, id),
            patients: Vec::new(),
            explanations: Vec::new(),
        };
        if include_patient {
            let rows = client
                .query(
                    "SELECT af.patient_id, f.explanation FROM alert_findings af
                     JOIN findings f ON f.event_id = af.event_id AND f.detector = af.detector
                     WHERE af.alert_id = $1 GROUP BY 1, 2 ORDER BY min(f.time) LIMIT 50",
                    &[&id],
                )
                .await
                .map_err(&e)?;
            for row in rows {
                view.add_patient(row.get(0), row.get(1));
            }
        }
        Ok(Some(view))
    }

    /// The alert's page in the console, when the receiver names the console's address.
    pub fn link(console_url: Option<&str>, id: i64) -> Option<String> {
        console_url.map(|u| format!("{}/alerts/{id}", u.trim_end_matches('/')))
    }

    /// One of the alert's findings, for a receiver that sets `include_patient`.
    pub fn add_patient(&mut self, patient: String, explanation: String) {
        if !self.patients.contains(&patient) {
            self.patients.push(patient);
        }
        self.explanations.push(explanation);
    }

    pub fn subject(&self) -> String {
        format!(
            "[phiwatch] {} alert #{}: {} by user {} ({} finding{}, {} patient{})",
            self.severity,
            self.alert_id,
            self.category,
            self.user,
            self.findings,
            plural(self.findings),
            self.incidents,
            plural(self.incidents)
        )
    }

    pub fn text(&self) -> String {
        let mut t = format!(
            "Alert #{id}: {cat}\nSeverity: {sev}\nUser: {user}\nDepartment: {dept}\nFindings: {f}\nPatients involved: {i}\nFirst seen: {first}\nLast seen: {last}\n",
            id = self.alert_id,
            cat = self.category,
            sev = self.severity,
            user = self.user,
            dept = or_unknown(&self.department),
            f = self.findings,
            i = self.incidents,
            first = self.first_seen,
            last = self.last_seen,
        );
        if let Some(l) = &self.link {
            t.push_str(&format!("Review: {l}\n"));
        }
        for e in &self.explanations {
            t.push_str(&format!("- {e}\n"));
        }
        t.push_str("\nPatient details are in the console (minimum necessary).\n");
        t
    }

    pub fn html(&self) -> String {
        let esc = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
        };
        let mut h = format!(
            "<h2>Alert #{} &mdash; {}</h2><table><tr><th>Severity</th><td>{}</td></tr><tr><th>User</th><td>{}</td></tr><tr><th>Department</th><td>{}</td></tr><tr><th>Findings</th><td>{}</td></tr><tr><th>Patients involved</th><td>{}</td></tr><tr><th>First seen</th><td>{}</td></tr><tr><th>Last seen</th><td>{}</td></tr></table>",
            self.alert_id,
            esc(&self.category),
            esc(&self.severity),
            esc(&self.user),
            esc(or_unknown(&self.department)),
            self.findings,
            self.incidents,
            esc(&self.first_seen),
            esc(&self.last_seen)
        );
        if let Some(l) = &self.link {
            h.push_str(&format!("<p><a href=\"{0}\">{0}</a></p>", esc(l)));
        }
        if !self.explanations.is_empty() {
            h.push_str("<ul>");
            for e in &self.explanations {
                h.push_str(&format!("<li>{}</li>", esc(e)));
            }
            h.push_str("</ul>");
        }
        h
    }
}

impl AlertView {
    /// Fills `{name}` placeholders: alert_id, status, category, severity, user, department,
    /// first_seen, last_seen, findings, incidents, link, patients, explanations. Values are
    /// HTML-escaped for HTML templates; unknown names stay as written so a typo shows.
    pub fn fill(&self, template: &str, html: bool) -> String {
        let esc = |s: String| {
            if html {
                s.replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('>', "&gt;")
                    .replace('"', "&quot;")
            } else {
                s
            }
        };
        crate::detect::explain::fill_with(template, |name| {
            Some(esc(match name {
                "alert_id" => self.alert_id.to_string(),
                "status" => self.status.clone(),
                "category" => self.category.clone(),
                "severity" => self.severity.clone(),
                "user" => self.user.clone(),
                "department" => or_unknown(&self.department).to_owned(),
                "first_seen" => self.first_seen.clone(),
                "last_seen" => self.last_seen.clone(),
                "findings" => self.findings.to_string(),
                "incidents" => self.incidents.to_string(),
                "link" => self.link.clone().unwrap_or_default(),
                "patients" => self.patients.join(", "),
                "explanations" => self.explanations.join("\n"),
                _ => return None,
            }))
        })
    }
}

fn plural(n: i64) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn or_unknown(s: &str) -> &str {
    if s.is_empty() {
        "unknown"
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fill_and_escape() {
        let v = AlertView {
            alert_id: 9,
            status: "open".into(),
            category: "vip".into(),
            severity: "high".into(),
            user: "<b>x</b>".into(),
            department: String::new(),
            first_seen: String::new(),
            last_seen: String::new(),
            findings: 4,
            incidents: 2,
            link: None,
            patients: vec![],
            explanations: vec![],
        };
        assert_eq!(
            v.fill("#{alert_id} {user} {department} {nope}", false),
            "#9 <b>x</b> unknown {nope}"
        );
        assert_eq!(v.fill("{user}", true), "&lt;b&gt;x&lt;/b&gt;");
    }
}
