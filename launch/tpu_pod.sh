#!/usr/bin/env bash
# Runs score_jax on every worker of a Cloud TPU VM (a pod slice has several hosts).
#
# Every worker runs the SAME command; launch/common.py's --distributed calls
# jax.distributed.initialize(), which finds the other workers from the TPU
# metadata. Each process then reads its shard of the prompts, samples its own
# rows, and joins the collective train steps and Orbax saves.
#
#   launch/tpu_pod.sh NAME ZONE setup                  copy HEAD of this checkout to
#                                                      ~/score_jax on every worker and
#                                                      install the requirements + jax[tpu]
#   launch/tpu_pod.sh NAME ZONE train [FLAG...]        python launch/train.py --distributed FLAG...
#   launch/tpu_pod.sh NAME ZONE run SCRIPT [FLAG...]   any launch/ script, e.g. bench_sharding.py
#   launch/tpu_pod.sh NAME ZONE kill                   stop python on every worker (a hung run)
#
# Example:
#   launch/tpu_pod.sh my-v5e-32 us-west4-a train --config=configs/gemma3_270m_math.py \
#       --config.mesh.strategy=fsdp --config.workdir=/mnt/shared/runs/math
#
# config.workdir must be ONE directory that every worker sees (an NFS/Filestore
# mount or a gcsfuse-mounted bucket, at the same path): Orbax writes each host's
# shards there and restores from it. Environment: PROJECT (gcloud --project),
# REMOTE_DIR (default score_jax), PYTHON (default python3), JAX_TPU (the pip spec
# of jax for TPUs, default "jax[tpu]").
set -euo pipefail

if [[ $# -lt 3 ]]; then
  sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'
  exit 2
fi
NAME=$1 ZONE=$2 VERB=$3
shift 3
REMOTE_DIR=${REMOTE_DIR:-score_jax}
PYTHON=${PYTHON:-python3}
JAX_TPU=${JAX_TPU:-jax[tpu]}
GCLOUD=(gcloud compute tpus tpu-vm)
EXTRA=(--zone="$ZONE")
[[ -n "${PROJECT:-}" ]] && EXTRA+=(--project="$PROJECT")

on_all() {  # runs one shell command on every worker, at once
  "${GCLOUD[@]}" ssh "$NAME" "${EXTRA[@]}" --worker=all --command="$1"
}

quoted() {  # the arguments, quoted for the remote shell
  local out=""
  for a in "$@"; do out+=" $(printf '%q' "$a")"; done
  echo "$out"
}

case "$VERB" in
  setup)
    repo=$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)
    tarball=$(mktemp -t score_jax.XXXXXX.tar.gz)
    trap 'rm -f "$tarball"' EXIT
    git -C "$repo" archive --format=tar.gz -o "$tarball" HEAD
    "${GCLOUD[@]}" scp "$tarball" "$NAME":score_jax.tar.gz "${EXTRA[@]}" --worker=all
    on_all "mkdir -p $REMOTE_DIR && tar -xzf score_jax.tar.gz -C $REMOTE_DIR && \
      cd $REMOTE_DIR && $PYTHON -m pip install -q -U '$JAX_TPU' -r requirements.txt"
    ;;
  train)
    on_all "cd $REMOTE_DIR && $PYTHON launch/train.py --distributed$(quoted "$@")"
    ;;
  run)
    [[ $# -ge 1 ]] || { echo "run: which launch/ script?" >&2; exit 2; }
    script=$1
    shift
    on_all "cd $REMOTE_DIR && $PYTHON launch/$script$(quoted "$@")"
    ;;
  kill)
    on_all "pkill -f 'launch/.*\\.py' || true"
    ;;
  *)
    echo "unknown verb '$VERB'; expected setup, train, run or kill" >&2
    exit 2
    ;;
esac
