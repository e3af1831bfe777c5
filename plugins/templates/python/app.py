"""{{name}}: break-the-glass on a patient with no encounter near the access (replace with your
rule). Build with ./build.sh; try: phiwatch plugin test {{name}}.wasm --cases cases.toml"""

import wit_world

import phiwatch_plugin as pw

CATEGORY = "{{category}}"


class WitWorld(wit_world.WitWorld):
    def describe(self):
        return pw.description("{{name}}", "0.1.0", [CATEGORY])

    def configure(self, config):
        pw.settings(config, {})

    def detect(self, batch):
        out = []
        for a in batch.accesses:
            if a.break_glass and not a.encounter_near:
                user, patient = batch.users[a.user], batch.patients[a.patient]
                out.append(pw.finding(
                    CATEGORY, pw.Severity.MEDIUM,
                    "User %s used break-the-glass on patient %s with no encounter near the access."
                    % (user.id, patient.id),
                    [a.id]))
        return out
