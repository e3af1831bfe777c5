"""employee-first-look: the first time a user opens the chart of a patient who is on the
hospital's staff (a coworker) with no care relationship and no encounter in the user's
department. Later looks by the same user at the same coworker are not reported again: the
first look is the one a privacy officer asks about, and the Cedar pack's coworker rule already
reports each access. What a user has looked at is kept in the plugin's state, so a restart
does not report old first looks again.
"""

import wit_world

import phiwatch_plugin as pw

CATEGORY = "employee_first_access"
DEFAULTS = {"severity": "medium"}


class WitWorld(wit_world.WitWorld):
    severity = pw.Severity.MEDIUM

    def describe(self):
        schema = '{"type":"object","properties":{"severity":{"enum":["low","medium","high","critical"]}},"additionalProperties":false}'
        return pw.description("employee-first-look", "0.1.0", [CATEGORY], schema)

    def configure(self, config):
        s = pw.settings(config, DEFAULTS)
        WitWorld.severity = pw.severity(s["severity"])

    def detect(self, batch):
        out = []
        for a in batch.accesses:
            patient = batch.patients[a.patient]
            user = batch.users[a.user]
            if not patient.employee or a.relationships or a.department_encounter:
                continue
            key = "seen:%s|%s" % (user.id, patient.id)
            if pw.state.get(key) is not None:
                continue
            if not pw.state.set(key, b""):
                pw.log("state quota reached: first looks are no longer remembered")
            role = pw.name(batch, user.role) or "unknown role"
            department = pw.name(batch, user.department) or "unknown department"
            out.append(
                pw.finding(
                    CATEGORY,
                    WitWorld.severity,
                    "User %s (%s, %s) opened the record of patient %s, who is on the hospital's "
                    "staff, for the first time, with no care relationship and no encounter in the "
                    "user's department." % (user.id, role, department, patient.id),
                    [a.id],
                )
            )
        return out
