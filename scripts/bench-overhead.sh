#!/usr/bin/env bash
# Per-job overhead: builds the same generated jobs with a bare `nix build`
# of all installables and with `nixbus run`, at the same parallelism, each
# side salted with its own nonce so both build everything, and prints the
# ratio. Cases: (a) 100 jobs of ~1 s in a binary tree (target <= 1.05x),
# (b) 1,000 trivial jobs in a binary tree (target <= 1.25x).
# Usage: scripts/bench-overhead.sh [a|b]...   (default: a b)
# PAR sets the parallelism (default 4); NIXBUS names the nixbus binary
# (default: built from this tree); NIXBUS_ARGS adds flags to `nixbus run`.
set -euo pipefail
# (pipefail: a failing nixbus run fails the pipe through perl)
cd "$(dirname "$0")/.."
PAR=${PAR:-4}
if [ -z "${NIXBUS:-}" ]; then
  go build -o bin/ ./cmd/nixbus
  NIXBUS=$PWD/bin/nixbus
fi
work=$(mktemp -d)
trap 'chmod -R u+w "$work" 2>/dev/null; rm -rf "$work"' EXIT

# flake N SLEEP NONCE DIR: N jobs, job i waiting for job (i-1)/2.
flake() {
  mkdir -p "$4"
  cat >"$4/flake.nix" <<NIX
{
  outputs = { self }: let
    n = $1;
    mk = i: builtins.derivation {
      name = "j\${toString i}";
      system = "x86_64-linux";
      builder = "/bin/sh";
      args = [ "-c" "$2 echo $3 \${toString i} > \$out" ];
      deps = if i == 0 then [ ] else [ (builtins.elemAt jobs ((i - 1) / 2)) ];
    };
    jobs = builtins.genList mk n;
  in {
    hydraJobs = builtins.listToAttrs (builtins.genList (i: { name = "j\${toString i}"; value = builtins.elemAt jobs i; }) n);
  };
}
NIX
}

now() { date +%s.%N; }

run_case() {
  local id=$1 name=$2 n=$3 sleep=$4 target=$5
  local salt; salt="$(date +%s%N)-$RANDOM"
  local bare="$work/$id-bare" bus="$work/$id-nixbus"
  flake "$n" "$sleep" "bare-$salt" "$bare"
  flake "$n" "$sleep" "nixbus-$salt" "$bus"
  local attrs=()
  for ((i = 0; i < n; i++)); do attrs+=("path:$bare#hydraJobs.j$i"); done
  local t0 t1 t2 t3
  t0=$(now)
  nix --extra-experimental-features 'nix-command flakes' build --no-link --max-jobs "$PAR" --option substituters '' "${attrs[@]}" >/dev/null 2>"$work/$id-bare.log" \
    || { cat "$work/$id-bare.log" >&2; exit 1; }
  t1=$(now)
  t2=$(now)
  # Each output line is stamped, to tell when the last build was reported
  # from when the run ended (uploads and the vote).
  "$NIXBUS" run --state-dir "$work/$id-state" --builder.concurrency "$PAR" --nix.option substituters= ${NIXBUS_ARGS:-} "$bus" 2>"$work/$id-nixbus.log" \
    | perl -MTime::HiRes=time -ne 'printf "%.3f %s", time(), $_' >"$work/$id-nixbus.out" \
    || { tail -20 "$work/$id-nixbus.out" "$work/$id-nixbus.log" >&2; exit 1; }
  t3=$(now)
  local built; built=$(awk '/ built /{t=$1} END{print t}' "$work/$id-nixbus.out")
  [ -n "$built" ] && awk -v s="$t2" -v b="$built" -v e="$t3" 'BEGIN {
    printf "  nixbus: last build reported after %.1f s; uploads and the vote took the last %.1f s\n", b - s, e - b }'
  awk -v name="$name" -v n="$n" -v b="$(echo "$t1 - $t0" | bc)" -v x="$(echo "$t3 - $t2" | bc)" -v target="$target" -v par="$PAR" 'BEGIN {
    r = x / b
    printf "TARGET overhead %s: %d jobs, parallelism %d: bare nix build %.1f s, nixbus run %.1f s: %.2fx (target <= %.2fx): %s\n",
      name, n, par, b, x, r, target, (r <= target ? "met" : "MISSED")
  }'
}

cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=(a b)
for c in "${cases[@]}"; do
  case $c in
  a) run_case a "a (100 jobs of ~1 s, tree)" 100 "/bin/sleep 1;" 1.05 ;;
  b) run_case b "b (1,000 trivial jobs, tree)" 1000 "" 1.25 ;;
  *) echo "unknown case $c" >&2; exit 2 ;;
  esac
done
