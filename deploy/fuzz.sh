#!/usr/bin/env bash
# deploy/fuzz.sh [SECONDS] [TARGET...]: fuzzing at scale. Installs what it needs, builds the libFuzzer
# targets of tests/fuzz (clang, libFuzzer + ASan/UBSan, in build-fuzz as deploy/test.sh
# does) and runs every one of them, one after another, for at least 10^6 executions
# (LORAD_FUZZ_RUNS=N to change that) and at least SECONDS (default 0), whichever ends
# later; with TARGETs, only those, whose rows then replace theirs in RESULTS.md (each row
# names the commit it ran at). The list of targets, their dictionaries and -max_len come from
# tests/fuzz/CMakeLists.txt (LORAD_FUZZ_TARGETS, written to build-fuzz/tests/fuzz/targets.tsv);
# each run is tests/fuzz/run_fuzz.sh on a scratch copy of the target's seed corpus, in
# build-fuzz/tests/fuzz/long/<target>/ with its log beside it. Writes tests/fuzz/RESULTS.md
# from libFuzzer's final stats: per target the executions, execs/s, final corpus size and
# crashes, with the date, the command and the commit. Exits non-zero, naming the saved
# inputs, when any target crashed, leaked or timed out.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-0}
if ! [[ $seconds =~ ^[0-9]+$ ]]; then
  echo "usage: deploy/fuzz.sh [SECONDS] [TARGET...]" >&2
  exit 2
fi
shift $(($# > 0 ? 1 : 0))
only=("$@")
export LORAD_FUZZ_RUNS=${LORAD_FUZZ_RUNS:-1000000}
command="deploy/fuzz.sh $seconds"
[ "$LORAD_FUZZ_RUNS" = 1000000 ] || command="LORAD_FUZZ_RUNS=$LORAD_FUZZ_RUNS $command"

./deploy/install-deps.sh

echo "== build the fuzz targets (clang, libFuzzer + ASan/UBSan)"
./deploy/build.sh fuzz

# The commit the targets were built from; RESULTS.md itself does not make it dirty.
commit=$(git rev-parse --short HEAD)
if [ -n "$(git status --porcelain --untracked-files=no -- . ':!tests/fuzz/RESULTS.md')" ]; then
  commit="$commit (with uncommitted changes)"
fi

mapfile -t targets <build-fuzz/tests/fuzz/targets.tsv
for want in "${only[@]}"; do
  if ! printf '%s\n' "${targets[@]}" | cut -f1 | grep -qx -- "$want"; then
    echo "deploy/fuzz.sh: no fuzz target $want (tests/fuzz/CMakeLists.txt lists: $(cut -f1 build-fuzz/tests/fuzz/targets.tsv | tr '\n' ' '))" >&2
    exit 2
  fi
done
results=tests/fuzz/RESULTS.md
cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//')
declare -A kept # target -> its row in RESULTS.md, for the targets not run now
if [ ${#only[@]} -gt 0 ] && [ -f "$results" ]; then
  old_commit=$(sed -n 's/^- Commit: //p' "$results") # files written before rows named their commit
  old_cpu=$(sed -n 's/^- Machine: .*, //p' "$results") # or their machine's CPU
  while IFS= read -r row; do
    name=$(cut -d'|' -f2 <<<"$row" | tr -d ' ')
    if [ "$(tr -cd '|' <<<"$row" | wc -c)" -eq 7 ]; then
      row="$(cut -d'|' -f1-6 <<<"$row")| ${old_commit:-?} |$(cut -d'|' -f7- <<<"$row")"
    fi
    if [ "$(tr -cd '|' <<<"$row" | wc -c)" -eq 8 ]; then
      row="$row ${old_cpu:-?} |"
    fi
    kept[$name]=$row
  done < <(grep '^| fuzz_' "$results")
fi
long=build-fuzz/tests/fuzz/long
mkdir -p "$long"
rows=()
failures=()
for line in "${targets[@]}"; do
  IFS=$'\t' read -r -a f <<<"$line"
  name=${f[0]} fuzzer=${f[1]} corpus=${f[2]}
  if [ ${#only[@]} -gt 0 ] && ! printf '%s\n' "${only[@]}" | grep -qx -- "$name"; then
    [ -n "${kept[$name]:-}" ] && rows+=("${kept[$name]}")
    continue
  fi
  scratch=$PWD/$long/$name log=$PWD/$long/$name.log
  echo "== $name: at least $LORAD_FUZZ_RUNS executions and $seconds s (log: $log)"
  rc=0
  nice -n 5 sh tests/fuzz/run_fuzz.sh "$fuzzer" "$corpus" "$scratch" "$seconds" "${f[@]:3}" >"$log" 2>&1 || rc=$?

  # One block of final stats a pass: executions add up, the rate is over the passes' time.
  read -r passes execs rate < <(awk '
    /^stat::number_of_executed_units:/ { u = $2; n += u; p++ }
    /^stat::average_exec_per_sec:/ { if ($2 > 0) t += u / $2 }
    END { printf "%d %d %d\n", p, n, (t > 0 ? n / t + 0.5 : 0) }' "$log")
  mapfile -t found < <(find "$scratch" -maxdepth 1 -type f \
    \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' -o -name 'oom-*' \) | sort)
  seeds=$(find "$corpus" -maxdepth 1 -type f | wc -l)
  final=$(find "$scratch/corpus" -maxdepth 1 -type f | wc -l)
  for a in "${found[@]}"; do
    failures+=("$name: $(basename "$a" | cut -d- -f1): $a (log: $log)")
  done
  if [ "$rc" -ne 0 ] && [ ${#found[@]} -eq 0 ]; then
    failures+=("$name: exit $rc without a saved input (log: $log)")
  elif [ "$passes" -eq 0 ]; then
    failures+=("$name: no final stats in its log (log: $log)")
  fi
  echo "   $execs executions, $rate/s, corpus $seeds -> $final, ${#found[@]} crash inputs, exit $rc"
  rows+=("| $name | $execs | $rate | $seeds → $final | ${#found[@]} | $commit | $(date -u '+%Y-%m-%d %H:%M') | $cpu |")
done

{
  echo "# Fuzzing results"
  echo
  echo "Written by \`deploy/fuzz.sh\`; do not edit by hand. Every libFuzzer target of tests/fuzz,"
  echo "built with clang, libFuzzer, AddressSanitizer and UndefinedBehaviorSanitizer, ran one after"
  echo "another on a scratch copy of its seed corpus (\`tests/fuzz/corpus/<target>/\`) for at least"
  echo "$LORAD_FUZZ_RUNS executions and $seconds s, with its dictionary and -max_len from"
  echo "tests/fuzz/CMakeLists.txt. Executions and execs/s are libFuzzer's final stats"
  echo "(stat::number_of_executed_units, stat::average_exec_per_sec over all passes); the corpus"
  echo "counts files, the committed seeds and the scratch corpus at the end; crashes counts the"
  echo "crash, leak, timeout and out-of-memory inputs saved."
  echo
  echo "- Command: \`$command\` (\`deploy/fuzz.sh SECONDS TARGET...\` reruns some targets and replaces their rows)"
  echo "- Machine: $(nproc) cores, $(uname -sr); each row's CPU in its last column"
  echo
  echo "| target | executions | execs/s | corpus (seeds → final) | crashes | commit | date (UTC) | CPU |"
  echo "| --- | ---: | ---: | ---: | ---: | --- | --- | --- |"
  printf '%s\n' "${rows[@]}"
  if [ ${#failures[@]} -gt 0 ]; then
    echo
    echo "Found:"
    printf -- '- %s\n' "${failures[@]}"
  fi
} >"$results.tmp"
mv "$results.tmp" "$results"
echo "== wrote $results"

if [ ${#failures[@]} -gt 0 ]; then
  printf 'deploy/fuzz.sh: %s\n' "${failures[@]}" >&2
  exit 1
fi
