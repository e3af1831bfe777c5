"""Checks of phiwatch's own promises on every answer Schemathesis gets.

tests/e2e/console_e2e.rs (`openapi_document_matches_the_server_for_every_role`) runs
Schemathesis once per console role with these hooks loaded (SCHEMATHESIS_HOOKS=hooks):
- PHIWATCH_PERMS: the permissions of the signed-in role, comma separated. An operation whose
  `x-phiwatch-permission` the role lacks must answer 401 or 403 to every generated request,
  valid or not: authorization comes before validation and before any lookup.
- PHIWATCH_PHI: patient ids and names of the test clinic, one per line. No error answer may
  contain one that the request did not carry itself.
- PHIWATCH_HOOK_LOG: a file where, at exit, each check writes how many answers it judged, so
  the test knows the checks ran.
"""
import atexit
import json
import os
from urllib.parse import unquote

import schemathesis

PERMS = set(filter(None, os.environ.get("PHIWATCH_PERMS", "").split(",")))
PHI = [p for p in os.environ.get("PHIWATCH_PHI", "").split("\n") if len(p) >= 4]
JUDGED = {"authorization_holds": 0, "no_phi_in_errors": 0}


@atexit.register
def _report():
    log = os.environ.get("PHIWATCH_HOOK_LOG")
    if log:
        with open(log, "w") as f:
            json.dump(JUDGED, f)


@schemathesis.check
def authorization_holds(ctx, response, case):
    JUDGED["authorization_holds"] += 1
    need = case.operation.definition.raw.get("x-phiwatch-permission")
    if need in (None, "public", "signed") or need in PERMS:
        return None
    # Another method on the same path (unsupported_method sends TRACE) is rightly a 405.
    if response.request.method.upper() != case.operation.method.upper():
        return None
    if response.status_code not in (401, 403):
        raise AssertionError(
            f"{case.operation.label} needs {need!r}, which this role lacks, "
            f"yet answered {response.status_code}"
        )
    return None


@schemathesis.check
def no_phi_in_errors(ctx, response, case):
    JUDGED["no_phi_in_errors"] += 1
    if response.status_code < 400:
        return None
    request = response.request
    body = request.body or b""
    sent = unquote(request.url or "") + (
        body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body)
    )
    answer = response.content.decode("utf-8", "replace")
    for p in PHI:
        if p in answer and p not in sent:
            raise AssertionError(
                f"{case.operation.label} answered {response.status_code} with patient data "
                f"({len(p)} characters) the request did not carry"
            )
    return None
