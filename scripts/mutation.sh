#!/usr/bin/env bash
# Mutation testing as a habit (not CI): break the code one small change at a time and see which
# changes no test notices. Scope and tests are in pyproject.toml's [tool.mutmut]: the pure fold
# (jobtracker/domain) and the code of both stores that keeps row marks unique and writes events at
# their positions, against tests/unit and tests/contract (PostgreSQL included when it is reachable).
#
#   bash scripts/mutation.sh            # a fresh run, then the score and every surviving mutant
#   bash scripts/mutation.sh --resume   # reuse mutants/ from the last run (only changed code reruns)
#   .venv/bin/mutmut show NAME          # the diff of one survivor
#
# A survivor is a change to the code that every test still passes: a missing test, or a change
# that cannot alter behaviour (an equivalent mutant). Judge each one; write the test or say why.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ ! -x .venv/bin/mutmut ]]; then
    .venv/bin/pip install -q -e '.[dev]'
fi
if [[ "${1:-}" != "--resume" ]]; then
    rm -rf mutants
fi
# The replay property test runs fewer examples per mutant: a survivor pays for every covering
# test, and the property's 40 examples per store would dominate the run.
export JOBTRACKER_REPLAY_EXAMPLES="${JOBTRACKER_REPLAY_EXAMPLES:-8}"
mkdir -p mutants
started=$(date +%s)
# nice: the run keeps both cores busy for many minutes; whatever else runs here comes first.
nice -n 10 .venv/bin/mutmut run --max-children "${MUTATION_CHILDREN:-2}" > mutants/run.log 2>&1 \
    || { tail -40 mutants/run.log; exit 1; }
elapsed=$(( $(date +%s) - started ))
.venv/bin/mutmut export-cicd-stats > /dev/null
.venv/bin/python - "$elapsed" <<'EOF'
import json, sys
stats = json.load(open("mutants/mutmut-cicd-stats.json"))
killed = stats["killed"] + stats.get("timeout", 0) + stats.get("caught_by_type_check", 0)
judged = killed + stats["survived"] + stats.get("suspicious", 0)
print(f"mutants: {stats['total']}, killed {killed}, survived {stats['survived']}, "
      f"no test runs them {stats['no_tests']}, skipped {stats.get('skipped', 0)}, "
      f"suspicious {stats.get('suspicious', 0)}, in {int(sys.argv[1]) // 60} min")
print(f"mutation score: {killed / judged:.1%} of the mutants some test runs")
EOF
echo "survivors (.venv/bin/mutmut show NAME for the diff):"
.venv/bin/mutmut results
