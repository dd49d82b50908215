#!/bin/sh
# egress-run as a plain CI step: the tests run with no network beyond loopback, the report is
# kept and shown, and the step fails as egress-run says (3: the tests passed but tried to
# reach the network; otherwise pytest's own status, or 125 for egress-run's own failure).
set -u
status=0
egress-run --allow loopback --report egress.jsonl -- python -m pytest || status=$?
case $status in
  0) ;;
  3) echo "the tests passed, but something in them tried to reach the network:" >&2 ;;
  125) echo "egress-run could not start: check the step's configuration" >&2 ;;
  *) echo "the tests failed (status $status); a denial may be the cause:" >&2 ;;
esac
if [ -f egress.jsonl ]; then
  egress-run report egress.jsonl >&2
fi
exit "$status"
