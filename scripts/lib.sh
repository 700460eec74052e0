# Shell helpers shared by ferry's scripts (sourced, not run).

# now: the time in seconds with nanoseconds
now() { date +%s.%N; }

# since T: seconds elapsed since T (from `now`), two decimals
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# timed CMD...: runs CMD quietly and prints its wall time in seconds
timed() {
  local t
  t=$(now)
  "$@" >/dev/null 2>&1
  awk -v a="$t" -v b="$(now)" 'BEGIN { printf "%.3f\n", b - a }'
}

# median: the median of the numbers on stdin, two decimals
median() {
  sort -n | awk '{ v[NR] = $1 } END { m = int((NR + 1) / 2); printf "%.2f", (NR % 2) ? v[m] : (v[m] + v[m + 1]) / 2 }'
}
