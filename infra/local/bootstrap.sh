#!/usr/bin/env bash
# Installs the local AWS emulators and the API fuzzer into project-local
# virtualenvs from the pinned lock files: .stowage/venv/localstack,
# .stowage/venv/moto and .stowage/venv/schemathesis. A venv is rebuilt only
# when its lock file changed. Needs Python 3.11 with venv and pip.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
venvs="$root/.stowage/venv"

python=""
for candidate in python3.11 python3; do
  if command -v "$candidate" >/dev/null 2>&1 &&
     "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
    python=$candidate
    break
  fi
done
if [ -z "$python" ]; then
  echo "bootstrap: Python 3.11 is needed for LocalStack 4.12 (found: $(python3 --version 2>&1))" >&2
  exit 1
fi

install() {
  local name=$1 lock="$root/infra/local/requirements-$1.lock"
  local venv="$venvs/$name" stamp="$venvs/$name/.lock.sha256"
  local want
  want=$(sha256sum "$lock" | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  echo "bootstrap: installing $name into $venv (first run takes a minute or two)" >&2
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps -r "$lock"
  echo "$want" > "$stamp"
}

mkdir -p "$venvs"
install localstack &
ls_pid=$!
install moto
install schemathesis
wait "$ls_pid"
