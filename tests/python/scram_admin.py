"""kafka-python's SCRAM admin calls over a SASL listener: AlterUserScramCredentials, then
DescribeUserScramCredentials, printed as one JSON object.

Usage: scram_admin.py --bootstrap HOST:PORT --security-protocol P --sasl-mechanism M
           --username U --password PW [--cafile CA]
           [--upsert USER:MECHANISM:PASSWORD ...] [--delete USER:MECHANISM ...]
           [--describe USER ...]

Prints {"alter": {user: error or null}, "describe": {user: {"error": ..., "credentials":
[[mechanism, iterations], ...]}}}; `--describe` with no users describes every user.
"""

import argparse
import json
import sys

from kafka.admin import (KafkaAdminClient, UserScramCredentialDeletion,
                         UserScramCredentialUpsertion)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--security-protocol", required=True)
    ap.add_argument("--sasl-mechanism", required=True)
    ap.add_argument("--username", required=True)
    ap.add_argument("--password", required=True)
    ap.add_argument("--cafile")
    ap.add_argument("--upsert", nargs="*", default=[])
    ap.add_argument("--delete", nargs="*", default=[])
    ap.add_argument("--describe", nargs="*")
    a = ap.parse_args()
    admin = KafkaAdminClient(
        bootstrap_servers=a.bootstrap,
        security_protocol=a.security_protocol,
        sasl_mechanism=a.sasl_mechanism,
        sasl_plain_username=a.username,
        sasl_plain_password=a.password,
        ssl_cafile=a.cafile,
        request_timeout_ms=20000,
    )
    out = {}
    alterations = [UserScramCredentialUpsertion(*u.split(":", 2)) for u in a.upsert]
    alterations += [UserScramCredentialDeletion(*d.split(":", 1)) for d in a.delete]
    if alterations:
        out["alter"] = {u: (str(e) if e else None)
                        for u, e in admin.alter_user_scram_credentials(alterations).items()}
    if a.describe is not None:
        got = admin.describe_user_scram_credentials(a.describe or None)
        out["describe"] = {
            u: {"error": (str(v["error"]) if v["error"] else None),
                "credentials": sorted([str(c["mechanism"]), c["iterations"]]
                                      for c in v["credential_infos"])}
            for u, v in got.items()
        }
    admin.close()
    print(json.dumps(out, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
