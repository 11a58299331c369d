#!/usr/bin/env bash
# The executable of submit/submit_htcondor.sub: activates the environment and runs salt.
#
# HTCondor sets SALT_RUN_ID (condor<cluster>.<process>) and SALT_VENV or SALT_CONDA through the
# submit file's `environment`. The run folder logs/<name>_<SALT_RUN_ID> is therefore the same at
# every start of the job: when HTCondor starts it again after an eviction or a SIGTERM (salt
# saved ckpts/interrupted-*.ckpt and exited 143), salt resumes from the newest checkpoint there.
set -euo pipefail

die() {
    echo "run_htcondor.sh: $*" >&2
    exit 2
}

(($# > 0)) || die "no salt arguments (the submit file's 'arguments', e.g. fit --config ...)"
if [[ -n "${SALT_CONDA:-}" ]]; then
    command -v conda >/dev/null || die "SALT_CONDA=$SALT_CONDA: no conda command on this node"
    # shellcheck disable=SC1091
    source "$(conda info --base)/etc/profile.d/conda.sh"
    conda activate "$SALT_CONDA"
elif [[ -n "${SALT_VENV:-}" ]]; then
    [[ -f "$SALT_VENV/bin/activate" ]] || die "SALT_VENV=$SALT_VENV: no bin/activate there"
    # shellcheck disable=SC1091
    source "$SALT_VENV/bin/activate"
fi
command -v salt >/dev/null || die "no salt command: set SALT_VENV or SALT_CONDA in the submit file"
[[ -z "${SALT_WORKDIR:-}" ]] || cd "$SALT_WORKDIR"
echo "salt on $(hostname), run id ${SALT_RUN_ID:-none}, in $(pwd)"
exec salt "$@"
