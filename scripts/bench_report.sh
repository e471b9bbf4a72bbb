#!/usr/bin/env bash
# Turns the raw output of `chimaera_benchmark --dump-dir DIR` into a report
# in DIR (run by scripts/run_benchmark.sh; usable alone):
#   latency_cdf.png  CDF of the synchronous Noop round trip next to the
#                    in-run baselines (cache-line ping-pong, ZeroMQ REQ/REP)
#   throughput.png   tasks/s against tasks in flight (1 and 2 threads) next
#                    to the ping-pong rate (1e9 / its median ns)
#   report.md        the figures, percentiles and ratios
# Without gnuplot the PNGs are skipped with a warning; report.md is written.
#
#   bench_report.sh DIR
set -euo pipefail
if [[ $# -ne 1 || ! -d "$1" ]]; then
  echo "usage: $0 <directory written by chimaera_benchmark --dump-dir>" >&2
  exit 2
fi
DIR=$(cd "$1" && pwd)
TMP=$(mktemp -d /tmp/chimaera_bench_report.XXXXXX)
cleanup() { rm -rf "$TMP"; }
trap cleanup EXIT

# Sorts samples file $1 into $TMP/<name>.cdf ("ns fraction" lines).
make_cdf() {
  local name=$1 file="$DIR/latency_$1.txt"
  [[ -s "$file" ]] || return 1
  sort -n "$file" | awk -v n="$(wc -l <"$file")" '{ print $1, NR / n }' \
    >"$TMP/$name.cdf"
}

# Prints percentile $2 (0..1) of samples file latency_$1.txt ("-" if none).
pct() {
  local file="$DIR/latency_$1.txt"
  [[ -s "$file" ]] || { echo "-"; return; }
  sort -n "$file" | awk -v q="$2" '{ v[NR] = $1 }
    END { i = int(q * NR); if (i < 1) i = 1; if (i > NR) i = NR; print v[i] }'
}

# Prints $1 / $2 with two decimals ("-" if either is missing or zero).
ratio() {
  awk -v a="$1" -v b="$2" 'BEGIN {
    if (a == "-" || b == "-" || b + 0 == 0) print "-";
    else printf "%.2f", a / b }'
}

series=()
for s in noop pingpong zmq; do
  make_cdf "$s" && series+=("$s")
done
noop50=$(pct noop 0.5)
noop99=$(pct noop 0.99)
pp50=$(pct pingpong 0.5)
zmq50=$(pct zmq 0.5)
pp_rate=$(awk -v p="$pp50" 'BEGIN { if (p == "-" || p + 0 == 0) print 0;
  else printf "%.0f", 1e9 / p }')

plots=()
if ! command -v gnuplot >/dev/null; then
  echo "bench_report: gnuplot not found (apt-get install gnuplot-nox);" \
    "skipping the plots" >&2
else
  if [[ ${#series[@]} -gt 0 ]]; then
    {
      echo "set terminal pngcairo size 900,600 noenhanced"
      echo "set output '$DIR/latency_cdf.png'"
      echo "set title 'Round-trip latency CDF: sync Noop vs in-run baselines'"
      echo "set xlabel 'round trip (ns, log scale)'"
      echo "set ylabel 'fraction of samples'"
      echo "set logscale x"
      echo "set key bottom right"
      echo "set grid"
      plot="plot "
      for s in "${series[@]}"; do
        case $s in
          noop) t="chimaera sync Noop" ;;
          pingpong) t="baseline: cache-line ping-pong" ;;
          zmq) t="baseline: ZeroMQ ipc REQ/REP" ;;
        esac
        plot+="'$TMP/$s.cdf' using 1:2 with lines lw 2 title '$t', "
      done
      echo "${plot%, }"
    } >"$TMP/latency.gp"
    if gnuplot "$TMP/latency.gp" 2>"$TMP/gp.err" ||
      { sed -i 's/pngcairo/png/' "$TMP/latency.gp" &&
        gnuplot "$TMP/latency.gp" 2>"$TMP/gp.err"; }; then
      plots+=("latency_cdf.png")
    else
      echo "bench_report: gnuplot failed: $(cat "$TMP/gp.err")" >&2
    fi
  fi
  if [[ -s "$DIR/throughput.csv" ]]; then
    for t in 1 2; do
      awk -F, -v t="$t" 'NR > 1 && $1 == t { print $2, $3 }' \
        "$DIR/throughput.csv" >"$TMP/tput$t.dat"
    done
    {
      echo "set terminal png size 900,600 noenhanced"
      echo "set output '$DIR/throughput.png'"
      echo "set title 'Async Noop throughput vs tasks in flight'"
      echo "set xlabel 'tasks in flight per thread (log scale)'"
      echo "set ylabel 'tasks/s'"
      echo "set logscale x 2"
      echo "set key top left"
      echo "set grid"
      plot="plot '$TMP/tput1.dat' using 1:2 with linespoints lw 2 title '1 thread', "
      plot+="'$TMP/tput2.dat' using 1:2 with linespoints lw 2 title '2 threads'"
      if [[ "$pp_rate" != 0 ]]; then
        plot+=", $pp_rate with lines dt 2 title 'baseline: ping-pong round trips/s'"
      fi
      echo "$plot"
    } >"$TMP/tput.gp"
    if gnuplot "$TMP/tput.gp" 2>"$TMP/gp.err"; then
      plots+=("throughput.png")
    else
      echo "bench_report: gnuplot failed: $(cat "$TMP/gp.err")" >&2
    fi
  fi
fi

{
  echo "# Chimaera benchmark report"
  echo
  echo "Generated $(date -u '+%Y-%m-%d %H:%M UTC') on $(hostname) from"
  echo "\`chimaera_benchmark --dump-dir\` (raw samples in this directory)."
  echo
  echo "## Latency (ns)"
  echo
  echo "| series | samples | p50 | p99 | p99.9 |"
  echo "| --- | ---: | ---: | ---: | ---: |"
  for s in noop pingpong zmq; do
    f="$DIR/latency_$s.txt"
    [[ -s "$f" ]] || continue
    echo "| $s | $(wc -l <"$f") | $(pct "$s" 0.5) | $(pct "$s" 0.99) |" \
      "$(pct "$s" 0.999) |"
  done
  echo
  echo "## Ratios"
  echo
  echo "- sync Noop p50 / ping-pong p50: $(ratio "$noop50" "$pp50")"
  echo "- sync Noop p99 / ping-pong p50: $(ratio "$noop99" "$pp50")"
  echo "- sync Noop p50 / ZeroMQ p50: $(ratio "$noop50" "$zmq50")"
  if [[ -s "$DIR/throughput.csv" ]]; then
    best=$(awk -F, 'NR > 1 && $3 > m { m = $3 } END { printf "%.0f", m }' \
      "$DIR/throughput.csv")
    echo "- best throughput: $best tasks/s;" \
      "over the ping-pong rate ($pp_rate/s): $(ratio "$best" "$pp_rate")"
    echo
    echo "## Throughput sweep"
    echo
    echo "| threads | in flight | tasks/s |"
    echo "| ---: | ---: | ---: |"
    awk -F, 'NR > 1 { printf "| %s | %s | %s |\n", $1, $2, $3 }' \
      "$DIR/throughput.csv"
  fi
  echo
  echo "## Figures"
  echo
  if [[ ${#plots[@]} -eq 0 ]]; then
    echo "(none: gnuplot missing or no samples)"
  fi
  for p in "${plots[@]}"; do
    echo "![${p%.png}]($p)"
    echo
  done
} >"$DIR/report.md"
echo "bench_report: wrote $DIR/report.md${plots:+ and ${plots[*]}}"
