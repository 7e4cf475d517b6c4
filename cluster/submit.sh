#!/usr/bin/env bash
# Submit a teamsrl command (by default the whole pipeline) to a Ray cluster as a Ray job.
# Run `cluster/submit.sh --help` for the options; cluster/README.md says what is tested.
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: cluster/submit.sh --config FILE [options] [-- EXTRA_TEAMSRL_ARGS...]

Submits `python -m teamsrl.cli COMMAND --config FILE [--address auto] [--set ...]` to a Ray
cluster with `ray job submit --runtime-env cluster/runtime_env.yaml`, streams the job's logs and
exits with the job's status (0: SUCCEEDED). The code of this checkout travels with the job (the
runtime env's working_dir); the cluster's image must already hold the dependencies.

Options:
  --config FILE         experiment YAML (a sweep YAML for --command sweep), relative to the
                        repository root (required)
  --command NAME        teamsrl subcommand (default: pipeline; e.g. train-policy, sweep)
  --address URL         the head's job API (default: $RAY_API_SERVER_ADDRESS, else $RAY_ADDRESS,
                        else http://127.0.0.1:8265 — e.g. through `kubectl port-forward` or
                        `ray dashboard cluster/cluster-launcher.yaml`)
  --set KEY=VALUE       config override passed to teamsrl (repeatable)
  --run-dir DIR         shorthand for --set run_dir=DIR. Use storage every node sees: a relative
                        run_dir resolves inside the job's unpacked working_dir, which is
                        temporary
  --runtime-env FILE    runtime env YAML (default: cluster/runtime_env.yaml)
  --token-file FILE     the cluster's Ray auth token file (exported as RAY_AUTH_TOKEN_PATH)
  --python CMD          the cluster's Python (default: python)
  --submission-id ID    job id to use (default: Ray makes one)
  --no-wait             return once the job is submitted
  --dry-run             print the ray command (never the token) and exit
  -h, --help            this text

Token authentication (Ray >= 2.52; Ray 2.60 turns it on for clusters it starts with a token):
  RAY_AUTH_MODE defaults to `token` here. The token is taken, as Ray itself does, from
  RAY_AUTH_TOKEN, else the file RAY_AUTH_TOKEN_PATH (or --token-file), else ~/.ray/auth_token.
  Get it on the head with `ray get-auth-token`; on KubeRay from the Secret the operator made
  (see cluster/kuberay-raycluster.yaml). RAY_AUTH_MODE=disabled submits without a token, which
  only works against a cluster started with auth disabled too. The token is never printed and
  never put in the runtime env.

Examples:
  cluster/submit.sh --config experiments/paper-llama7b.yaml --address http://127.0.0.1:8265
  cluster/submit.sh --config experiments/quickstart.yaml --run-dir /runs/qs --set policy.iterations=1
  cluster/submit.sh --command sweep --config experiments/sweep-action-sets.yaml
EOF
}

die() { echo "submit.sh: error: $*" >&2; exit 2; }

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
config="" command="pipeline" runtime_env="cluster/runtime_env.yaml" python_cmd="python"
address="${RAY_API_SERVER_ADDRESS:-${RAY_ADDRESS:-http://127.0.0.1:8265}}"
submission_id="" no_wait=0 dry_run=0
sets=() extra=()

need() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value"; }
while [[ $# -gt 0 ]]; do
  case "$1" in
    --config) need "$@"; config="$2"; shift 2 ;;
    --command) need "$@"; command="$2"; shift 2 ;;
    --address) need "$@"; address="$2"; shift 2 ;;
    --set) need "$@"; sets+=(--set "$2"); shift 2 ;;
    --run-dir) need "$@"; sets+=(--set "run_dir=$2"); shift 2 ;;
    --runtime-env) need "$@"; runtime_env="$2"; shift 2 ;;
    --token-file) need "$@"; export RAY_AUTH_TOKEN_PATH="$2"; shift 2 ;;
    --python) need "$@"; python_cmd="$2"; shift 2 ;;
    --submission-id) need "$@"; submission_id="$2"; shift 2 ;;
    --no-wait) no_wait=1; shift ;;
    --dry-run) dry_run=1; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
done

cd "$ROOT"  # the runtime env's working_dir (.) and the config path are relative to the repo root
[[ -n "$config" ]] || die "--config is required (see --help)"
[[ -f "$config" ]] || die "--config '$config': file not found (relative to $ROOT)"
[[ -f "$runtime_env" ]] || die "--runtime-env '$runtime_env': file not found"
[[ "$command" =~ ^[a-z][a-z-]*$ ]] || die "--command '$command': expected a teamsrl subcommand"

# ---- token authentication -------------------------------------------------------------------
mode="${RAY_AUTH_MODE:-token}"
case "$mode" in
  token)
    export RAY_AUTH_MODE=token
    if [[ -n "${RAY_AUTH_TOKEN:-}" ]]; then
      token_source="RAY_AUTH_TOKEN"
    elif [[ -n "${RAY_AUTH_TOKEN_PATH:-}" ]]; then
      [[ -s "$RAY_AUTH_TOKEN_PATH" && -r "$RAY_AUTH_TOKEN_PATH" ]] ||
        die "RAY_AUTH_TOKEN_PATH = '$RAY_AUTH_TOKEN_PATH': expected a readable, non-empty token file"
      token_source="$RAY_AUTH_TOKEN_PATH"
    elif [[ -s "$HOME/.ray/auth_token" ]]; then
      token_source="$HOME/.ray/auth_token"
    else
      die "RAY_AUTH_MODE = token but no token: set RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or \
--token-file, or put it in ~/.ray/auth_token (on the head: \`ray get-auth-token\`), or set \
RAY_AUTH_MODE=disabled for a cluster without auth"
    fi
    ;;
  disabled)
    token_source="none (RAY_AUTH_MODE=disabled: the cluster must have auth disabled too)" ;;
  *) die "RAY_AUTH_MODE = '$mode': expected token or disabled" ;;
esac

# ---- the job ----------------------------------------------------------------------------------
entry=("$python_cmd" -m teamsrl.cli "$command" --config "$config")
case "$command" in
  pipeline|train-policy|sweep) entry+=(--address auto) ;;  # join the job's cluster
esac
entry+=("${sets[@]}" "${extra[@]}")

ray_cmd=("${RAY:-ray}" job submit --address "$address" --runtime-env "$runtime_env")
[[ -n "$submission_id" ]] && ray_cmd+=(--submission-id "$submission_id")
[[ $no_wait -eq 1 ]] && ray_cmd+=(--no-wait)
ray_cmd+=(-- "${entry[@]}")

echo "submit.sh: address $address, auth $RAY_AUTH_MODE (token: $token_source)" >&2
if [[ $dry_run -eq 1 ]]; then
  printf '%q ' "${ray_cmd[@]}"; echo
  exit 0
fi
exec "${ray_cmd[@]}"
