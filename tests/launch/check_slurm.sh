#!/usr/bin/env bash
# A real one-node Slurm on localhost (slurmctld + slurmd + munge from Debian's packages,
# configured as in shared/docs/hpc.md): submits launch/qshard.sbatch with 2 tasks on the
# tiny model, once through srun and once through mpirun, and checks the job completed,
# wrote a finished 2-shard checkpoint and one log per rank. Then stops (layers slowed by
# QSHARD_TEST_LAYER_SECONDS in the first allocation only, src/core/test_hooks.h): scancel
# (the ranks stop at a safe point; the same sbatch command resumes), an early SIGUSR1
# before a 1-minute time limit (the template requeues itself and the next allocation
# resumes), and a job that runs into its time limit.
# Exit 77 (skipped) when Slurm is not installed or cannot start here (not root, ports
# taken); CI installs it (launch/setup.sh) so there it runs.
set -uo pipefail
: "${QSHARD_BIN:?}" "${QSHARD_TEST_MODEL:?}" "${QSHARD_SOURCE_DIR:?}"
skip() { echo "skip: $*"; exit 77; }
for tool in slurmctld slurmd munged sbatch squeue sinfo scontrol runuser; do
  command -v "$tool" >/dev/null || [[ -x /usr/sbin/$tool ]] || skip "$tool not installed (apt-get install slurm-wlm munge)"
done
[[ $(id -u) -eq 0 ]] || skip "starting slurmd needs root"
export PATH=$PATH:/usr/sbin

dir=$(mktemp -d /tmp/qshard-slurm-XXXXXX)
chmod 755 "$dir"
started_munge=0
cleanup() {
  # Jobs first (a failed or interrupted test may leave one running or requeued), so no
  # slurmstepd or rank outlives the daemons.
  local jobs
  jobs=$(SLURM_CONF=$dir/slurm.conf squeue -h -o %i 2>/dev/null)
  if [[ -n $jobs ]]; then
    SLURM_CONF=$dir/slurm.conf scancel $jobs 2>/dev/null
    for _ in $(seq 1 50); do
      [[ -z $(SLURM_CONF=$dir/slurm.conf squeue -h 2>/dev/null) ]] && break
      sleep 0.2
    done
  fi
  SLURM_CONF=$dir/slurm.conf scontrol shutdown >/dev/null 2>&1
  for f in "$dir/slurmctld.pid" "$dir/slurmd.pid"; do
    [[ -f $f ]] && kill "$(cat "$f")" 2>/dev/null
  done
  if ((started_munge)) && [[ -f /run/munge/munged.pid ]]; then kill "$(cat /run/munge/munged.pid)" 2>/dev/null; fi
  sleep 0.5
  rm -rf "$dir"
}
trap cleanup EXIT

# Ports: Slurm's defaults unless taken (another cluster on this machine).
ctld_port=6817 d_port=6818
if (exec 3<>/dev/tcp/127.0.0.1/$ctld_port) 2>/dev/null; then ctld_port=17817 d_port=17818; fi
mkdir -p "$dir/state" "$dir/spool" "$dir/logs" "$dir/tmp"
cat > "$dir/slurm.conf" <<CONF
ClusterName=qshardci
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldPort=$ctld_port
SlurmdPort=$d_port
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=pmix
ReturnToService=2
SlurmdParameters=config_overrides
NodeName=localhost NodeAddr=127.0.0.1 CPUs=4 RealMemory=8000 State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
InactiveLimit=15
KillWait=5
# A requeued job waits this long before it starts again (default 120 s).
AuthInfo=cred_expire=10
# Step scratch (PMIx's spmix_appdir_UID_JOB.STEP) in this cluster's folder: a stale one
# from an earlier cluster's job of the same id fails the step's launch.
TmpFS=$dir/tmp
CONF
export SLURM_CONF=$dir/slurm.conf

if ! pgrep -x munged >/dev/null; then
  mkdir -p /run/munge && chown munge:munge /run/munge
  runuser -u munge -- /usr/sbin/munged || skip "munged did not start"
  started_munge=1
fi
slurmctld -c || skip "slurmctld did not start: $(tail -3 "$dir/slurmctld.log" 2>/dev/null)"
slurmd -N localhost || skip "slurmd did not start: $(tail -3 "$dir/slurmd.log" 2>/dev/null)"
for _ in $(seq 1 100); do
  [[ $(sinfo -h -o %T 2>/dev/null) == idle* ]] && break
  sleep 0.2
done
[[ $(sinfo -h -o %T 2>/dev/null) == idle* ]] || skip "node not idle: $(sinfo -h 2>&1 | head -1)"
echo "slurm up: $(sinfo -h)"

m=$QSHARD_TEST_MODEL
fail=0
run_job() {  # launcher
  local launcher=$1 out=$dir/out-$1
  local id
  id=$(cd "$dir" && QSHARD_BIN=$QSHARD_BIN QSHARD_LAUNCHER=$launcher QSHARD_LOG_DIR=$dir/logs/$launcher \
       OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1 \
       QSHARD_MPIRUN_FLAGS="--oversubscribe --mca pml ob1 --mca btl self,vader" \
       sbatch --parsable --nodes=1 --ntasks=2 --ntasks-per-node=2 --cpus-per-task=1 --output="$dir/job-$launcher.out" \
       "$QSHARD_SOURCE_DIR/launch/qshard.sbatch" quantize --model "$m" --out "$out" --calib "$m/text/calib.txt" \
       --n-calib 16 --calib-seqlen 64 --format int4 --group-size 128 --export gptq --quiet) || {
    echo "FAIL: sbatch ($launcher) refused the template"; fail=1; return; }
  local state=""
  for _ in $(seq 1 600); do  # up to 120 s
    squeue -h -j "$id" 2>/dev/null | grep -q . || break
    sleep 0.2
  done
  state=$(scontrol show job "$id" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2)
  echo "job $id ($launcher): ${state:-unknown}"
  if [[ $state != COMPLETED ]]; then
    echo "FAIL: $launcher job ended $state"; cat "$dir/job-$launcher.out"; tail -5 "$dir"/logs/$launcher/*/* 2>/dev/null
    fail=1; return
  fi
  for f in config.json model-00001-of-00002.safetensors model-00002-of-00002.safetensors model.safetensors.index.json; do
    [[ -f $out/$f ]] || { echo "FAIL: $launcher: $out/$f missing"; ls "$out"; fail=1; }
  done
  local logs
  logs=$(find "$dir/logs/$launcher" -type f | wc -l)
  [[ $logs -ge 2 ]] || { echo "FAIL: $launcher: $logs rank log file(s), expected 2"; fail=1; }
  grep -q "requeue\|restart" "$dir/job-$launcher.out" || { echo "FAIL: $launcher: no start line in the job log"; fail=1; }
  echo "ok: $launcher: finished 2-shard checkpoint, $logs rank logs"
}
run_job srun
run_job mpirun

# ---- stops: scancel, an early SIGUSR1 with requeue, a time limit
# QSHARD_BIN for the stop jobs: layers take SLOW seconds in the first allocation only.
cat > "$dir/slow-qshard" <<WRAP
#!/bin/sh
[ "\${SLURM_RESTART_COUNT:-0}" = 0 ] && [ -n "\$SLOW" ] && export QSHARD_TEST_LAYER_SECONDS=\$SLOW
exec "$QSHARD_BIN" "\$@"
WRAP
chmod +x "$dir/slow-qshard"
segments() { local n; n=$(grep -c '"index":' "$1/.qshard/manifest.json" 2>/dev/null); echo "${n:-0}"; }
submit() {  # name slow-seconds sbatch-options... ; prints the job id
  local name=$1 slow=$2
  shift 2
  (cd "$dir" && SLOW=$slow QSHARD_BIN=$dir/slow-qshard QSHARD_LAUNCHER=srun QSHARD_LOG_DIR=$dir/logs/$name \
     OMP_NUM_THREADS=1 sbatch --parsable --nodes=1 --ntasks=2 --ntasks-per-node=2 --cpus-per-task=1 \
     --output="$dir/job-$name.out" "$@" "$QSHARD_SOURCE_DIR/launch/qshard.sbatch" quantize --model "$m" \
     --out "$dir/out-$name" --calib "$m/text/calib.txt" --n-calib 16 --calib-seqlen 64 --format int4 --export gptq)
}
job_state() { scontrol show job "$1" 2>/dev/null | grep -o 'JobState=[A-Z_]*' | cut -d= -f2; }
wait_job() {  # id max-seconds: until it leaves the queue (a requeued job stays in it)
  for _ in $(seq 1 $((5 * $2))); do
    squeue -h -j "$1" 2>/dev/null | grep -q . || break
    sleep 0.2
  done
}
stopped_line() { grep -h "qshard: stopped by SIGTERM at a safe point: [1-3] of 4 layers are saved in" "$dir"/logs/"$1"/*/rank-0.log 2>/dev/null | head -1; }
finished() {  # name: a finished output that verifies
  local out=$dir/out-$1
  [[ -f $out/config.json ]] && "$QSHARD_BIN" verify "$out" >/dev/null 2>&1
}
resume_by_sbatch() {  # name: the same sbatch command again completes the run
  local id
  id=$(submit "$1" "") || { echo "FAIL: $1: resubmit refused"; fail=1; return; }
  wait_job "$id" 120
  local state; state=$(job_state "$id")
  if [[ $state == COMPLETED ]] && finished "$1" && grep -qh "resuming" "$dir"/logs/"$1"/"$id"/rank-0.log; then
    echo "ok: $1: the same sbatch command resumed and finished it (job $id)"
  else
    echo "FAIL: $1: resubmitted job $id ended $state"; tail -5 "$dir"/logs/"$1"/"$id"/* 2>/dev/null; fail=1
  fi
}

# scancel while layers are running.
id=$(submit cancel 5) || { echo "FAIL: sbatch (cancel)"; fail=1; }
for _ in $(seq 1 600); do (($(segments "$dir/out-cancel") >= 1)) && break; sleep 0.2; done
t0=$(date +%s)
scancel "$id"
wait_job "$id" 60
echo "job $id (scancel): $(job_state "$id") after $(( $(date +%s) - t0 )) s, $(segments "$dir/out-cancel") layer(s) saved"
line=$(stopped_line cancel)
if [[ $(job_state "$id") == CANCELLED && -n $line && ! -f $dir/out-cancel/config.json ]]; then
  echo "ok: scancel: the ranks stopped at a safe point: $line"
  resume_by_sbatch cancel
else
  echo "FAIL: scancel: $(job_state "$id"), stop line '${line}'"; cat "$dir/job-cancel.out"; tail -5 "$dir"/logs/cancel/*/* 2>/dev/null
  fail=1
fi

# SIGUSR1 100 s before a 3-minute limit (Slurm may send it up to a minute early and
# polls every 30 s: 20 to about 110 s in; layers take 40 s in the first allocation):
# the template passes it on, the ranks stop, the job requeues itself and the next
# allocation (layers no longer slowed) resumes and finishes, with nobody resubmitting.
id=$(submit requeue 40 --time=3 --signal=B:USR1@100) || { echo "FAIL: sbatch (requeue)"; fail=1; }
wait_job "$id" 300
restarts=$(scontrol show job "$id" 2>/dev/null | grep -o 'Restarts=[0-9]*' | cut -d= -f2)
line=$(stopped_line requeue)
if [[ $(job_state "$id") == COMPLETED && ${restarts:-0} -ge 1 && -n $line ]] && finished requeue \
   && grep -q "requeued job $id" "$dir/job-requeue.out" && grep -qh "resuming" "$dir"/logs/requeue/*/rank-0.log; then
  echo "ok: requeue: stopped ($line), requeued $restarts time(s), resumed and finished by itself"
else
  echo "FAIL: requeue: job $id $(job_state "$id"), restarts ${restarts:-?}, stop line '${line}'"
  cat "$dir/job-requeue.out"; tail -5 "$dir"/logs/requeue/*/* 2>/dev/null; fail=1
fi

# A job that runs into its 1-minute limit with no early warning (SIGCONT is harmless):
# Slurm's own SIGTERM at the limit stops the ranks at a safe point within KillWait.
id=$(submit timelimit 40 --time=1 --signal=B:CONT@1) || { echo "FAIL: sbatch (timelimit)"; fail=1; }
wait_job "$id" 300
state=$(job_state "$id")
line=$(stopped_line timelimit)
if [[ -n $line ]] && { [[ $state == TIMEOUT ]] || { [[ $state == COMPLETED ]] && finished timelimit; }; }; then
  echo "ok: time limit: job $id $state, the ranks stopped at a safe point: $line"
  [[ $state == TIMEOUT ]] && resume_by_sbatch timelimit
else
  echo "FAIL: time limit: job $id $state, stop line '${line}'"; cat "$dir/job-timelimit.out"
  tail -5 "$dir"/logs/timelimit/*/* 2>/dev/null; fail=1
fi
((fail == 0)) && echo PASS
exit $fail
