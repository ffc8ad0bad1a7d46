"""Reads a broker's admin API and parses /metrics with the Prometheus project's own
OpenMetrics parser (prometheus_client), which refuses a malformed document: families
repeated or interleaved, bad names or labels, histograms whose buckets are not cumulative
or whose +Inf bucket differs from _count, a missing "# EOF".

Usage: metrics_check.py BASE_URL | --self-test
Prints one JSON document: the HTTP status of /v1/status/live, /v1/status/ready and an
unknown path, the /metrics content type, and every sample as
{"family", "type", "name", "labels", "value"}. --self-test shows the parser refusing
broken documents.
"""

import json
import sys
import urllib.error
import urllib.request

from prometheus_client.openmetrics.parser import text_string_to_metric_families


def status(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


# Documents the parser must refuse: the checks above are only as good as its refusals.
BROKEN = {
    "buckets not cumulative": (
        "# TYPE h histogram\n"
        'h_bucket{le="1.0"} 5\nh_bucket{le="2.0"} 3\nh_bucket{le="+Inf"} 5\n'
        "h_count 5\nh_sum 1.0\n# EOF\n"
    ),
    "a family split in two": (
        "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\n# TYPE a gauge\na 2\n# EOF\n"
    ),
    "no # EOF": "# TYPE a gauge\na 1\n",
    "+Inf bucket missing": (
        '# TYPE h histogram\nh_bucket{le="1.0"} 5\nh_count 5\nh_sum 1.0\n# EOF\n'
    ),
}


def self_test():
    for why, doc in BROKEN.items():
        try:
            list(text_string_to_metric_families(doc))
        except ValueError:
            continue
        sys.exit("the parser accepted a document with " + why)
    print(json.dumps({"refused": sorted(BROKEN)}))


def main():
    if sys.argv[1] == "--self-test":
        return self_test()
    base = sys.argv[1].rstrip("/")
    with urllib.request.urlopen(base + "/metrics", timeout=30) as r:
        content_type = r.headers.get("Content-Type", "")
        text = r.read().decode("utf-8")
    samples = []
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples.append(
                {
                    "family": family.name,
                    "type": family.type,
                    "name": s.name,
                    "labels": s.labels,
                    "value": s.value,
                }
            )
    print(
        json.dumps(
            {
                "live": status(base + "/v1/status/live"),
                "ready": status(base + "/v1/status/ready"),
                "missing": status(base + "/no/such/path"),
                "content_type": content_type,
                "samples": samples,
            }
        )
    )


if __name__ == "__main__":
    main()
