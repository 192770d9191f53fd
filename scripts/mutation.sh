#!/usr/bin/env bash
# Mutation testing as a habit (not CI): break the code one small change at a time and see which
# changes no test notices. Scope and tests are in pyproject.toml's [tool.mutmut]: the pure fold
# (jobtracker/domain) and the code of both stores that keeps row marks unique and writes events at
# their positions, against tests/unit and tests/contract (PostgreSQL included when it is reachable).
#
#   bash scripts/mutation.sh            # a fresh run, then the score and every surviving mutant
#   bash scripts/mutation.sh --resume   # keep mutants/ and the verdicts of the last run
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
# Mutants run in forked children that skip the test run's exit hooks: drop the test databases
# whose process is gone (tests/pg_database.py names them jobtracker_test_<pid>_<random>).
.venv/bin/python - <<'EOF'
import asyncio, os
import asyncpg
from tests.pg_database import server_url

async def drop_orphans() -> None:
    try:
        conn = await asyncpg.connect(server_url(), timeout=5)
    except (OSError, asyncpg.PostgresError, TimeoutError):
        return  # no PostgreSQL: the run skipped its tests, nothing to drop
    try:
        for row in await conn.fetch("SELECT datname FROM pg_database"):
            name = row["datname"]
            if not name.startswith("jobtracker_test_"):
                continue
            try:
                os.kill(int(name.split("_")[2]), 0)
            except ProcessLookupError:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()

asyncio.run(drop_orphans())
EOF
.venv/bin/mutmut export-cicd-stats > /dev/null
.venv/bin/python - "$elapsed" <<'EOF'
import json, sys
stats = json.load(open("mutants/mutmut-cicd-stats.json"))
# A mutant that hangs (timeout) or crashes the tests (segfault) is noticed too: killed.
killed = sum(stats.get(k, 0) for k in ("killed", "timeout", "segfault", "caught_by_type_check"))
judged = killed + stats["survived"] + stats.get("suspicious", 0)
print(f"mutants: {stats['total']}, killed {killed}, survived {stats['survived']}, "
      f"no test runs them {stats['no_tests']}, skipped {stats.get('skipped', 0)}, "
      f"suspicious {stats.get('suspicious', 0)}, in {int(sys.argv[1]) // 60} min")
print(f"mutation score: {killed / judged:.1%} of the mutants some test runs")
EOF
echo "survivors (.venv/bin/mutmut show NAME for the diff):"
.venv/bin/mutmut results
