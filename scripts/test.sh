#!/usr/bin/env bash
# Runs every suite against one build (build or build-asan) and ends with one line
# "N passed, N failed". Exits non-zero when anything failed or nothing ran.
# Usage: scripts/test.sh [build|build-asan] [busted args...]   (make test / make test-asan)
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${1:-build}; shift || true
cd "$ROOT"

export ORRERY_BIN="$ROOT/$BUILD/bin/orrery"
export LUA_CPATH="$ROOT/$BUILD/lua/?.so;;"
export LUA_PATH="$ROOT/lib/?.lua;$ROOT/lib/?/init.lua;$ROOT/spec/support/?.lua;;"
export ORRERY_TEST_ADMIN_URL="$(scripts/db.sh admin-url)"
export ORRERY_TEST_APP_URL="$(scripts/db.sh url)"
export ORRERY_TEST_OWNER_URL="$(scripts/db.sh owner-url)"
export ORRERY_TEST_ROOT="$ROOT"

if [[ "$BUILD" == build-asan ]]; then
  # The server binary reports leaks and errors; the lua5.4 interpreter that loads core.so is not
  # instrumented, so the runtime is preloaded and leak checks (of the interpreter) are off there.
  export ASAN_OPTIONS="abort_on_error=0:halt_on_error=1:detect_leaks=1:log_path=$ROOT/.data/asan/asan"
  export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1:log_path=$ROOT/.data/asan/ubsan"
  rm -rf "$ROOT/.data/asan"; mkdir -p "$ROOT/.data/asan"
  ASAN_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
fi

passed=0; failed=0; ran=0
run_suite() {
  local name=$1; shift
  local out; out=$(mktemp)
  echo "== $name"
  if [[ "$BUILD" == build-asan && "$*" != *integration* ]]; then
    LD_PRELOAD="$ASAN_PRELOAD" ASAN_OPTIONS="detect_leaks=0:halt_on_error=1" \
      busted --lua=lua5.4 -o plainTerminal "$@" 2>&1 | tee "$out"
  elif [[ "$BUILD" == build-asan ]]; then
    # Integration specs examine the sanitized server binary; the Lua module they load to forge
    # tokens must be the uninstrumented one, since the interpreter is not instrumented.
    LUA_CPATH="$ROOT/build/lua/?.so;;" busted --lua=lua5.4 -o plainTerminal "$@" 2>&1 | tee "$out"
  else
    busted --lua=lua5.4 -o plainTerminal "$@" 2>&1 | tee "$out"
  fi
  local line; line=$(grep -E '^[0-9]+ successes? / [0-9]+ failures? / [0-9]+ errors? / [0-9]+ pending' "$out" | tail -n 1)
  if [[ -z "$line" ]]; then
    echo "$name: busted printed no summary (crashed?)"; failed=$((failed + 1))
  else
    read -r s _ _ f _ _ e _ <<<"$line"
    passed=$((passed + s)); failed=$((failed + f + e)); ran=$((ran + s + f + e))
  fi
  rm -f "$out"
}

lint() {
  echo "== lint (luacheck)"
  local dirs=(); for d in lib spec agents; do [[ -d $d ]] && dirs+=("$d"); done
  if luacheck -q "${dirs[@]}"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
}

if [[ $# -gt 0 ]]; then
  run_suite selected "$@"             # scripts/test.sh build spec/unit/router_spec.lua ...
else
  lint
  run_suite unit spec/unit
  run_suite integration spec/integration
fi

if [[ "$BUILD" == build-asan ]] && compgen -G "$ROOT/.data/asan/*" >/dev/null; then
  echo "== sanitizer reports:"; cat "$ROOT"/.data/asan/* | head -n 200
  failed=$((failed + 1))
fi

echo "$passed passed, $failed failed"
[[ $failed -eq 0 && $passed -gt 0 ]]
