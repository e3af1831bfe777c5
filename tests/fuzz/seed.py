#!/usr/bin/env python3
"""Seeds each fuzz target's corpus (tests/fuzz/__fuzz__/<target>/corpus/seed-*) from the
fixtures, in the input encoding targets.rs reads: a mode byte (even: raw, odd: shaped)
before the record. Seeds are rewritten on every run; what libFuzzer adds is left alone."""
import glob
import hashlib
import json
import os

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
FUZZ = os.path.join(ROOT, "tests", "fuzz", "__fuzz__")


def read(path):
    with open(os.path.join(ROOT, path), "rb") as f:
        return f.read()


def write(target, seeds):
    d = os.path.join(FUZZ, target, "corpus")
    os.makedirs(d, exist_ok=True)
    for s in seeds:
        name = "seed-" + hashlib.sha256(s).hexdigest()[:16]
        with open(os.path.join(d, name), "wb") as f:
            f.write(s)
    print(f"{target}: {len(seeds)} seeds")


RAW = b"\x00"
SHAPED = b"\x01"

fhir = [l for l in read("tests/fixtures/clinic/events.ndjson").splitlines()[:40] if l]
fhir += [l for l in read("tests/fixtures/ihe-balp/patient-read.ndjson").splitlines() if l]
for p in sorted(glob.glob(os.path.join(ROOT, "tests/fixtures/hl7-r4-auditevent/*.json"))):
    with open(p, "rb") as f:
        fhir.append(json.dumps(json.load(f), separators=(",", ":")).encode())
write("fhir_audit_event", [RAW + l for l in fhir] + [SHAPED + b"e1\xffdr-ana\xffpt-1\xff10.0.0.1"])

atna = [m["xml"].encode() for m in json.loads(read("tests/fixtures/atna/messages.json"))]
write("atna_xml", [RAW + x for x in atna] + [SHAPED + b"dr-ana\xffpt-1\xffWS-1\xffEHR"])

# The decoder's own unit-test records (agent/src/decode/siem.rs).
cef = [
    rb"<134>Mar 10 08:00:00 epicprd01 CEF:0|Epic|Security-SIEM|2024|AC_BREAK_THE_GLASS_ACCESS|Break the glass|5|UID=E1001 LOGIN_LDAP_ID=jdoe usrName=E1001-DOE, JANE- PATIENT=Z7004242 devTime=Mar 10 2026 08:00:05 shost=WS-ED-04 DEP=EMERGENCY DEPARTMENT BTGREASON=Patient in my care BTGEXPLANATION=a\=b\\c",
    b"LEEF:2.0|Epic|Security-SIEM|2024|CONTEXTCHANGE|^|UID=E2^NEWDEPARTMENT=ONCOLOGY^devTime=Mar 10 2026 07:59:00",
    b"LEEF:1.0|Epic|Security-SIEM|2024|ACCESS|UID=E2\tPATIENT=Z1\tdevTime=Mar 10 2026 08:00:00",
]
write("cef_leef", [RAW + c for c in cef] + [SHAPED + b"E1001\xffZ7004242\xffWS-ED-04\xffED\xffcare"])

csv = b"Audit ID,Access Time,User ID,MRN,Action,Workstation,Department\n"
csv += b"A1,03/10/2026 08:00:00,dr-ana,MRN-2001,Chart Review,WS-1,ED\n"
csv += b'A2,03/10/2026 08:01:00,"O\'NEIL, MARY",MRN-2002,Print,WS-2,"CARD, 3"\n'
write("csv_row_with_mapping", [RAW + csv, SHAPED + b"A1\xffdr-ana\xffMRN-1\xffview\xffWS\xffED"])

hl7 = read("tests/fixtures/hl7v2/messages.hl7")
msgs = [m for m in hl7.split(b"\x0b") if m.strip()]
write("hl7v2_adt", [RAW + m.replace(b"\x1c", b"").strip(b"\r\n") for m in msgs[:20]]
      + [SHAPED + b"MRN-1\xffDOE\xffJANE\xff1 Main St\xff45385\xffjwatson\xffCARD"])
write("mllp_framing", [hl7[:4000], b"\x0bMSH|^~\\&|A\rPID|1\x1c\x0d\x0bMSH|B\x1c\x0d"])

frames = []
for x in atna[:10]:
    one = x.replace(b"\n", b"").replace(b"\t", b"")
    msg = b"<85>1 2026-03-10T14:00:01Z ehr atna-audit 4242 IHE+RFC-3881 - " + one
    frames.append(str(len(msg)).encode() + b" " + msg)
    frames.append(b"<34>Mar 10 14:00:01 ehr audit: " + one + b"\n")
frames.append(b'<13>1 2026-03-01T10:00:00Z h app - ID47 [ex@32473 iut="3" note="a \\] b"] \xef\xbb\xbf<AuditMessage/>\n')
frames.append(cef[0] + b"\n")
write("syslog_framing", frames)
write("rfc5424_header", [f.split(b" ", 1)[1] if f[:1].isdigit() else f for f in frames])

write("config_toml", [read("install/phiwatch.example.toml")])
rules = [b"\x00" + read("rules/routing.toml"), b"\x01" + read("rules/response.toml"),
         b"\x02" + read("rules/jurisdictions.toml"), b"\x03" + read("rules/detection.toml")]
write("rules_files", rules)
cedar = [SHAPED + read(p) for p in sorted(glob.glob(os.path.join(ROOT, "policies/*.cedar")))]
cedar += [RAW + read("policies/schema.cedarschema")]
write("cedar_pack", cedar)
