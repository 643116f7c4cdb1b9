#!/usr/bin/env bash
# Build benchmarks/.oracle-venv: a separate virtual environment holding torchattacks (the attack oracle).
#
# torchattacks pins requests~=2.25.1, which breaks JupyterLab, so it must never go into the main .venv.
# This venv gets the same torch as the main one, torchattacks, pyautoattack (APGD-CE reference) and an
# editable, dependency-free install of cas_edu from this checkout.
#
# Usage (from the repository root):   bash benchmarks/setup_oracle.sh
# Then:                               benchmarks/.oracle-venv/bin/python benchmarks/attack_oracle.py
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/benchmarks/.oracle-venv"
PYTHON="${PYTHON:-python3}"

# Fail early (and cheaply) if the registry cannot serve torchattacks.
TMP="$(mktemp -d)"
"$PYTHON" -m pip download torchattacks --no-deps -d "$TMP" >/dev/null
rm -rf "$TMP"

"$PYTHON" -m venv "$VENV"
"$VENV/bin/pip" install --upgrade pip >/dev/null
"$VENV/bin/pip" install torch==2.14.1 torchattacks numpy scikit-learn tqdm
"$VENV/bin/pip" install --no-deps pyautoattack==0.2.0
"$VENV/bin/pip" install --no-deps -e "$ROOT"
"$VENV/bin/python" -c "import torch, torchattacks, pyautoattack, cas_edu; print('oracle venv ready: torch', torch.__version__, '| torchattacks', torchattacks.__version__)"
