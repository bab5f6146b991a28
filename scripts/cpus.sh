#!/usr/bin/env bash
# The CPUs this process may use: the ones it may run on (nproc: its affinity mask), fewer where a cgroup CPU quota
# says so (a container given 2 CPUs of a 64-core host sees 64 in nproc).  cgroup v2 `cpu.max` ("quota period" or
# "max ..."), else v1 `cpu/cpu.cfs_quota_us` and `cpu.cfs_period_us` (quota -1: none).  CGROUP_ROOT: where the
# cgroup files are (default /sys/fs/cgroup; the tests point it elsewhere).
set -u
root=${CGROUP_ROOT:-/sys/fs/cgroup}
cpus=$(nproc 2>/dev/null || echo 1)
quota="" period=""
if [ -r "$root/cpu.max" ]; then
    read -r quota period < "$root/cpu.max"
elif [ -r "$root/cpu/cpu.cfs_quota_us" ] && [ -r "$root/cpu/cpu.cfs_period_us" ]; then
    quota=$(cat "$root/cpu/cpu.cfs_quota_us")
    period=$(cat "$root/cpu/cpu.cfs_period_us")
fi
case "$quota" in
    ''|max|-*) ;;
    *)
        if [ "${period:-0}" -gt 0 ] 2>/dev/null; then
            allowed=$(( (quota + period - 1) / period ))  # rounded up: 1.5 CPUs of quota keep 2 busy
            if [ "$allowed" -ge 1 ] && [ "$allowed" -lt "$cpus" ]; then
                cpus=$allowed
            fi
        fi
        ;;
esac
echo "$cpus"
