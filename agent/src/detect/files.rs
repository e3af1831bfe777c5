//! Judges PHI folder events with the folder policy pack (`policies/files/`).
//! Folder events are few next to EHR accesses, so each is evaluated without a memo.

use super::cedar::PolicyPack;
use super::explain::{fill_with, or_unknown};
use crate::event::FileEvent;
use crate::finding::Finding;
use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, Request,
    RestrictedExpression,
};
use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::str::FromStr;

pub struct FileDetector<'p> {
    pack: &'p PolicyPack,
    authorizer: Authorizer,
    /// Watched folders, longest first, so a file names its innermost folder.
    folders: Vec<String>,
    pub eval_errors: u64,
}

impl<'p> FileDetector<'p> {
    pub fn new(pack: &'p PolicyPack, folders: &[String]) -> Self {
        let mut folders = folders.to_vec();
        folders.sort_by_key(|f| std::cmp::Reverse(f.len()));
        FileDetector {
            pack,
            authorizer: Authorizer::new(),
            folders,
            eval_errors: 0,
        }
    }

    fn folder_of(&self, path: &str) -> String {
        self.folders
            .iter()
            .find(|f| Path::new(path).starts_with(f.as_str()))
            .cloned()
            .or_else(|| Path::new(path).parent().map(|p| p.display().to_string()))
            .unwrap_or_default()
    }

    pub fn findings(&mut self, e: &FileEvent, out: &mut Vec<Finding>) {
        let folder = self.folder_of(&e.path);
        let raised = match self.request(e, &folder) {
            Ok((request, entities)) => {
                let response = self
                    .authorizer
                    .is_authorized(&request, &self.pack.set, &entities);
                self.eval_errors += response.diagnostics().errors().count() as u64;
                self.pack.raised(&response)
            }
            Err(msg) => {
                tracing::error!(error = %msg, "cannot build the Cedar request for a folder event");
                self.eval_errors += 1;
                vec![super::cedar::UNEXPLAINED]
            }
        };
        for ix in raised {
            let rule = self.pack.rule(ix);
            let value = |name: &str| {
                Some(match name {
                    "user" => or_unknown(&e.owner),
                    "path" => e.path.clone(),
                    "to_path" => e.to_path.clone(),
                    "folder" => folder.clone(),
                    "action" => e.change.action().to_owned(),
                    "mode" => format!("{:04o}", e.mode & 0o7777),
                    "old_mode" => format!("{:04o}", e.old_mode & 0o7777),
                    "count" => e.count.to_string(),
                    "window_seconds" => e.window_seconds.to_string(),
                    "time" => crate::time::format_ms(e.time_ms),
                    _ => return None,
                })
            };
            out.push(Finding {
                event_id: e.id.clone(),
                time: crate::time::format_ms(e.time_ms),
                user: e.owner.clone(),
                department: String::new(),
                patient: String::new(),
                action: e.change.action().to_owned(),
                category: rule.category.clone(),
                severity: rule.severity,
                detector: rule.id.clone(),
                explanation: fill_with(&rule.explain, value),
                hipaa: rule.hipaa.clone(),
            });
        }
    }

    fn request(
        &self,
        e: &FileEvent,
        folder: &str,
    ) -> Result<(Request, Entities), super::RequestError> {
        let ty = |s: &str| EntityTypeName::from_str(s).map_err(super::RequestError::from);
        let owner = if e.owner.is_empty() {
            "unknown"
        } else {
            &e.owner
        };
        let principal = EntityUid::from_type_name_and_id(ty("User")?, EntityId::new(owner));
        let resource = EntityUid::from_type_name_and_id(ty("PhiFile")?, EntityId::new(&e.path));
        let action =
            EntityUid::from_type_name_and_id(ty("Action")?, EntityId::new(e.change.action()));
        let extension = Path::new(&e.path)
            .extension()
            .map(|x| x.to_string_lossy().to_lowercase())
            .unwrap_or_default();
        let file = Entity::new(
            resource.clone(),
            HashMap::from([
                (
                    "folder".into(),
                    RestrictedExpression::new_string(folder.to_owned()),
                ),
                (
                    "extension".into(),
                    RestrictedExpression::new_string(extension),
                ),
            ]),
            HashSet::new(),
        )?;
        let user = Entity::new_no_attrs(principal.clone(), HashSet::new());
        let others = |mode: u32, bit: u32| mode & bit != 0;
        let gained = e.mode & !e.old_mode & 0o077;
        let b = RestrictedExpression::new_bool;
        let context = Context::from_pairs([
            ("world_readable".into(), b(others(e.mode, 0o004))),
            ("world_writable".into(), b(others(e.mode, 0o002))),
            ("widened".into(), b(e.old_mode != 0 && gained != 0)),
            (
                "count".into(),
                RestrictedExpression::new_long(i64::from(e.count)),
            ),
            (
                "window_seconds".into(),
                RestrictedExpression::new_long(i64::from(e.window_seconds)),
            ),
            ("owner_known".into(), b(!e.owner.is_empty())),
        ])?;
        let schema = Some(&self.pack.schema);
        let request = Request::new(principal, action, resource, context, schema)?;
        let entities = Entities::from_entities([user, file], schema)?;
        Ok((request, entities))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::FileChange;

    fn event(change: FileChange, mode: u32, old_mode: u32, count: u32) -> FileEvent {
        FileEvent {
            id: "f1".into(),
            time_ms: 0,
            change,
            path: "/srv/phi/labs/a.pdf".into(),
            to_path: String::new(),
            owner: "alice".into(),
            mode,
            old_mode,
            count,
            window_seconds: 60,
        }
    }

    fn judge(e: &FileEvent) -> Vec<Finding> {
        let pack = PolicyPack::embedded_files();
        let mut d = FileDetector::new(&pack, &["/srv/phi".to_owned()]);
        let mut out = Vec::new();
        d.findings(e, &mut out);
        assert_eq!(d.eval_errors, 0);
        out
    }

    #[test]
    fn ordinary_changes_are_explained() {
        for c in [
            FileChange::Created,
            FileChange::Modified,
            FileChange::Renamed,
            FileChange::Deleted,
        ] {
            assert!(judge(&event(c, 0o640, 0, 1)).is_empty(), "{c:?}");
        }
        // Tightening permissions, or widening only to the group, is not exposure.
        assert!(judge(&event(FileChange::Permissions, 0o600, 0o640, 1)).is_empty());
        assert!(judge(&event(FileChange::Permissions, 0o640, 0o600, 1)).is_empty());
    }

    #[test]
    fn world_readable_and_bursts_are_findings() {
        let f = judge(&event(FileChange::Permissions, 0o644, 0o640, 1));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].detector, "phi-file-world-accessible");
        assert_eq!(f[0].user, "alice");
        assert!(
            f[0].explanation.contains("mode 0640 to 0644"),
            "{}",
            f[0].explanation
        );
        assert!(
            f[0].explanation.contains("folder /srv/phi"),
            "{}",
            f[0].explanation
        );
        let f = judge(&event(FileChange::BulkRead, 0, 0, 75));
        assert_eq!(f[0].category, "phi-bulk-copy");
        assert!(
            f[0].explanation.starts_with("75 files"),
            "{}",
            f[0].explanation
        );
        let f = judge(&event(FileChange::BulkDelete, 0, 0, 75));
        assert_eq!(f[0].category, "phi-bulk-delete");
    }
}
