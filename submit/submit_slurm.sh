#!/usr/bin/env bash
# Train salt on a Slurm cluster. This one file submits the job and is the job.
#
# Submit from a login node: options, then `--` and the salt arguments.
#
#   submit/submit_slurm.sh --nodes 1 --gpus-per-node 4 --cpus-per-task 10 --mem 200G \
#       --time 24:00:00 --partition gpu --venv ~/salt/.venv -- fit --config configs/GN2.yaml
#
#   --nodes N           nodes (default 1)
#   --gpus-per-node G   GPUs per node, one DDP rank each (default 1; 0: one CPU rank per node)
#   --cpus-per-task C   CPUs per rank: dataloader workers + 1 (default 10)
#   --mem M             memory per node, e.g. 200G (default 100G)
#   --time T            wall-time limit, e.g. 24:00:00 (default 24:00:00)
#   --partition P       partition (default: the cluster's)
#   --account A         account to charge (default: yours)
#   --venv DIR          virtual environment to activate in the job (DIR/bin/activate)
#   --conda ENV         conda environment to activate in the job (instead of --venv)
#   --signal-time S     seconds before the time limit at which salt checkpoints and requeues
#                       the job (default 120; time enough to finish one batch and save)
#   --job-name NAME     (default salt)
#   --sbatch "ARGS"     more sbatch options, e.g. --sbatch "--constraint=a100 --qos=long"
#   --dry-run           print the sbatch command instead of running it
#
# Or edit the #SBATCH defaults below and submit the file directly:
#   SALT_VENV=~/salt/.venv sbatch submit/submit_slurm.sh fit --config configs/GN2.yaml
#
# In the job: activates the environment, starts one `salt` process per GPU with srun (Lightning's
# SLURMEnvironment makes them the DDP ranks, across nodes), and names the run folder
# logs/<name>_job<SLURM_JOB_ID> (SALT_RUN_ID), the same for every rank and every start. Slurm sends
# SIGUSR1 --signal-time seconds before the limit: salt finishes the batch, saves
# ckpts/interrupted-*.ckpt and requeues the job; the requeued job (same job id, same run folder)
# resumes from the newest checkpoint there. Cancel it with scancel as usual.
#
#SBATCH --job-name=salt
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=10
#SBATCH --mem=100G
#SBATCH --time=24:00:00
#SBATCH --signal=USR1@120
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm-%x-%j.out

set -euo pipefail

die() {
    echo "submit_slurm.sh: $*" >&2
    exit 2
}

usage() {
    sed -n '2,/^#SBATCH/{/^#SBATCH/d;s/^# \{0,1\}//;p}' "$0"
}

activate() {
    if [[ -n "${SALT_CONDA:-}" ]]; then
        # batch jobs do not inherit conda's shell functions
        command -v conda >/dev/null || die "--conda $SALT_CONDA: no conda command in the job"
        # shellcheck disable=SC1091
        source "$(conda info --base)/etc/profile.d/conda.sh"
        conda activate "$SALT_CONDA"
    elif [[ -n "${SALT_VENV:-}" ]]; then
        [[ -f "$SALT_VENV/bin/activate" ]] || die "--venv $SALT_VENV: no bin/activate there"
        # shellcheck disable=SC1091
        source "$SALT_VENV/bin/activate"
    fi
    command -v salt >/dev/null || die "no salt command: give --venv DIR or --conda ENV"
}

run_job() {
    (($# > 0)) || die "no salt arguments (e.g. fit --config configs/GN2.yaml)"
    activate
    cd "${SLURM_SUBMIT_DIR:-.}"
    # every rank and every start of this job use one run folder: logs/<name>_job<id>
    export SALT_RUN_ID="${SALT_RUN_ID:-job${SLURM_JOB_ID}}"
    local nodes="${SLURM_JOB_NUM_NODES:-${SLURM_NNODES:-1}}"
    local tasks="${SLURM_NTASKS_PER_NODE:-1}"
    tasks="${tasks%%(*}" # "4(x2)" on some versions
    local subcommand="$1"
    shift
    local ranks=()
    if ((nodes * tasks > 1)); then
        ranks=(--trainer.devices "$tasks" --trainer.num_nodes "$nodes" --trainer.strategy ddp)
    fi
    echo "salt job ${SLURM_JOB_ID} on $(hostname): ${nodes} node(s) x ${tasks} rank(s)," \
        "start $((${SLURM_RESTART_COUNT:-0} + 1)), run id ${SALT_RUN_ID}"
    local step=(--kill-on-bad-exit=1)
    # srun no longer inherits sbatch's --cpus-per-task (Slurm >= 22.05)
    [[ -z "${SLURM_CPUS_PER_TASK:-}" ]] || step+=(--cpus-per-task="$SLURM_CPUS_PER_TASK")
    # salt requeues the job itself on SIGUSR1 (after saving); exec passes its exit code on
    exec srun "${step[@]}" salt "$subcommand" ${ranks[@]+"${ranks[@]}"} "$@"
}

submit() {
    local nodes=1 gpus=1 cpus=10 mem=100G time=24:00:00 partition="" account=""
    local signal_time=120 job_name=salt dry_run=0 extra=()
    while (($# > 0)); do
        case "$1" in
        --nodes) nodes="${2:?}" && shift 2 ;;
        --gpus-per-node) gpus="${2:?}" && shift 2 ;;
        --cpus-per-task) cpus="${2:?}" && shift 2 ;;
        --mem) mem="${2:?}" && shift 2 ;;
        --time) time="${2:?}" && shift 2 ;;
        --partition) partition="${2:?}" && shift 2 ;;
        --account) account="${2:?}" && shift 2 ;;
        --venv) export SALT_VENV="${2:?}" && shift 2 ;;
        --conda) export SALT_CONDA="${2:?}" && shift 2 ;;
        --signal-time) signal_time="${2:?}" && shift 2 ;;
        --job-name) job_name="${2:?}" && shift 2 ;;
        --sbatch) read -r -a more <<<"${2:?}" && extra+=("${more[@]}") && shift 2 ;;
        --dry-run) dry_run=1 && shift ;;
        -h | --help) usage && exit 0 ;;
        --) shift && break ;;
        *) die "unknown option '$1' (salt's arguments come after --; see --help)" ;;
        esac
    done
    (($# > 0)) || die "no salt arguments after -- (e.g. -- fit --config configs/GN2.yaml)"
    local name
    for name in nodes gpus cpus signal_time; do
        [[ "${!name}" =~ ^[0-9]+$ ]] || die "--${name//_/-} must be a whole number, got '${!name}'"
    done
    ((nodes >= 1)) || die "--nodes must be at least 1"
    if [[ -n "${SALT_VENV:-}" ]]; then
        [[ -f "$SALT_VENV/bin/activate" ]] || die "--venv $SALT_VENV: no bin/activate there"
        SALT_VENV="$(cd "$SALT_VENV" && pwd)"
    fi
    local tasks=$((gpus > 0 ? gpus : 1)) gres="gpu:$gpus"
    ((gpus > 0)) || gres=none
    local args=(
        --job-name="$job_name" --nodes="$nodes" --ntasks-per-node="$tasks" --gres="$gres"
        --cpus-per-task="$cpus" --mem="$mem" --time="$time" --signal="USR1@$signal_time"
        --requeue --open-mode=append --output="logs/slurm/%x-%j.out"
    )
    [[ -z "$partition" ]] || args+=(--partition="$partition")
    [[ -z "$account" ]] || args+=(--account="$account")
    args+=(${extra[@]+"${extra[@]}"})
    local cmd=(sbatch "${args[@]}" "$0" "$@")
    local envs=()
    [[ -z "${SALT_VENV:-}" ]] || envs+=("SALT_VENV=$SALT_VENV")
    [[ -z "${SALT_CONDA:-}" ]] || envs+=("SALT_CONDA=$SALT_CONDA")
    if ((dry_run)); then
        printf '%q ' ${envs[@]+"${envs[@]}"} "${cmd[@]}"
        echo
        return 0
    fi
    mkdir -p logs/slurm
    "${cmd[@]}"
}

if [[ -n "${SLURM_JOB_ID:-}" ]]; then
    run_job "$@"
else
    submit "$@"
fi
