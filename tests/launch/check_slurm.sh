#!/usr/bin/env bash
# A real one-node Slurm on localhost (slurmctld + slurmd + munge from Debian's packages,
# configured as in shared/docs/hpc.md): submits launch/qshard.sbatch with 2 tasks on the
# tiny model, once through srun and once through mpirun, and checks the job completed,
# wrote a finished 2-shard checkpoint and one log per rank.
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
mkdir -p "$dir/state" "$dir/spool" "$dir/logs"
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
((fail == 0)) && echo PASS
exit $fail
