#!/bin/sh
# From audit to allow file to block mode, run once by hand in a project's checkout.
set -eu
# 1. Record what the tests reach; nothing is refused.
egress-run --audit --report audit.jsonl -- python -m pytest
# 2. An allow file that lets the same run pass, commented with counts and programs.
egress-run suggest -o egress.allow audit.jsonl
# 3. Review egress.allow (keep only what the tests should reach), commit it, and gate on it:
egress-run --allow-file egress.allow --report egress.jsonl -- python -m pytest
