#!/usr/bin/env bash
# Print the path of a working Python 3.10 interpreter, or explain how to get one.
# pyenv shims answer "command not found" when 3.10 is installed but not selected,
# so every candidate is actually run before it is accepted.
set -u
candidates=("${PYTHON310:-}" python3.10)
for dir in "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.10*/bin /usr/local/bin /usr/bin; do
  candidates+=("$dir/python3.10")
done
for py in "${candidates[@]}"; do
  [ -n "$py" ] || continue
  if out=$("$py" -c 'import sys; print(sys.executable) if sys.version_info[:2] == (3, 10) else exit(1)' 2>/dev/null); then
    echo "$out"
    exit 0
  fi
done
cat >&2 <<'MSG'
Python 3.10 is required (Rasa 3.6 supports nothing newer) and none was found.
Install it, for example:
  - Debian/Ubuntu:  apt-get install python3.10 python3.10-venv   (where the distribution ships it)
  - pyenv:          pyenv install 3.10
or point PYTHON310 at an interpreter: make setup PYTHON310=/path/to/python3.10
MSG
exit 1
